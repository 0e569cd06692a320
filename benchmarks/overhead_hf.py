"""Overhead on the Hugging Face Trainer: EnergyCallback beside transformers' CodeCarbonCallback
and CodeCarbon flushed at every logging step. Run through `benchmarks.overhead --framework hf`.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.stats import interleaved, median_ci, paired_ratios


def hf_variants() -> dict[str, object]:
    """name -> factory(trainer) that adds the variant's callbacks and returns nothing."""
    from transformers import TrainerCallback

    from hf_energy import EnergyCallback, attach

    class FlushEveryLog(TrainerCallback):
        """CodeCarbon used for per-step figures: one flush() per logging step."""

        def on_train_begin(self, args, state, control, **kwargs):
            from codecarbon import EmissionsTracker

            self.tracker = EmissionsTracker(save_to_file=False, log_level="error")
            self.tracker.start()

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.tracker.flush()

        def on_train_end(self, args, state, control, **kwargs):
            self.tracker.stop()

    return {
        "none": lambda trainer: None,
        "EnergyCallback": lambda trainer: attach(
            trainer, EnergyCallback(summary=False, carbon_intensity_g_per_kwh=400)
        ),
        "CodeCarbonCallback (report_to)": "codecarbon",
        "CodeCarbon flush() per log": lambda trainer: trainer.add_callback(FlushEveryLog()),
    }


def hf_fit_seconds(variant: object, steps: int, width: int, tmp: str) -> tuple[float, float]:
    """(training-loop seconds, start-up + tear-down seconds) of one HF Trainer run."""
    from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    class Timer(TrainerCallback):
        t0 = t1 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = self.t0 or time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.t1 = time.perf_counter()

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=256, n_positions=32, n_embd=width, n_layer=2, n_head=2, bos_token_id=None, eos_token_id=None
    )
    ids = torch.randint(1, 256, (steps * 8, 32))
    data = [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row} for row in ids]
    args = TrainingArguments(
        output_dir=tmp,
        max_steps=steps,
        per_device_train_batch_size=8,
        logging_steps=50,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        report_to=[variant] if isinstance(variant, str) else [],
    )
    timer = Timer()
    start = time.perf_counter()
    trainer = Trainer(model=GPT2LMHeadModel(config), args=args, train_dataset=data, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # no log lines on the console
    if callable(variant):
        variant(trainer)
    trainer.train()
    total = time.perf_counter() - start
    return timer.t1 - timer.t0, total - (timer.t1 - timer.t0)


def per_log_cost_ms(n: int = 20) -> tuple[float, float]:
    """Median cost of one logging step's work: (EnergyCallback.contribute, CodeCarbon flush()), in ms."""
    from types import SimpleNamespace

    from codecarbon import EmissionsTracker

    from hf_energy import EnergyCallback

    callback = EnergyCallback(summary=False, carbon_intensity_g_per_kwh=400)
    state = SimpleNamespace(global_step=0)
    callback.tracker.start_fit(0)
    ours = []
    for i in range(n):
        time.sleep(0.05)
        state.global_step = 50 * (i + 1)
        t0 = time.perf_counter()
        callback.contribute({"loss": 1.0}, state)
        ours.append(time.perf_counter() - t0)
    callback.tracker.end_fit(state.global_step)
    tracker = EmissionsTracker(save_to_file=False, log_level="error")
    tracker.start()
    theirs = []
    for _ in range(n):
        time.sleep(0.05)
        t0 = time.perf_counter()
        tracker.flush()
        theirs.append(time.perf_counter() - t0)
    tracker.stop()
    return 1000 * statistics.median(ours), 1000 * statistics.median(theirs)


def run_hf(step_ms: float, repeats: int, steps: int) -> tuple[float, tuple[float, float]]:
    """Median paired ratio of EnergyCallback's runs and its 95% interval (and the table, printed)."""
    import tempfile

    variants = hf_variants()
    with tempfile.TemporaryDirectory() as tmp:
        width = 16
        while hf_fit_seconds("none", 20, width, tmp)[0] / 20 * 1000 < step_ms and width < 2048:
            width += 16
        loop, setup = interleaved(
            list(variants), repeats, lambda name: hf_fit_seconds(variants[name], steps, width, tmp)
        )
    base = statistics.median(loop["none"])
    print(
        f"HF Trainer, tiny GPT-2 (n_embd {width}), {steps} steps of {1000 * base / steps:.2f} ms, "
        f"logging every 50 steps, {repeats} interleaved rounds:"
    )
    ratios = {}
    for name in variants:
        pairs = paired_ratios(loop, name)
        ratios[name] = (statistics.median(pairs), median_ci(pairs))
        low, high = ratios[name][1]
        print(
            f"  {name:<32} loop {statistics.median(loop[name]):.3f} s, ratio {ratios[name][0]:.4f} "
            f"(paired median, 95% CI {low:.4f}-{high:.4f}), start-up + tear-down "
            f"{statistics.median(setup[name]):.2f} s"
        )
    ours_ms, flush_ms = per_log_cost_ms()
    print(
        f"  work per logging step (median of 20): EnergyCallback {1000 * ours_ms:.0f} us, "
        f"CodeCarbon flush() {flush_ms:.1f} ms"
    )
    return ratios["EnergyCallback"]
