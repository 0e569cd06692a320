"""Energy to target: what reaching a quality cost, and stopping when more energy buys too little."""
