"""Every notice is safe to show: whatever text it quotes, it reaches a terminal as characters."""

from __future__ import annotations

from energy_core.notices import Notice, printable_lines


def test_a_notice_writes_out_control_characters_and_keeps_its_line_breaks() -> None:
    # Adapters show notices through Lightning's rank-zero helpers, the transformers logger or a
    # warning; each site that quoted outside text had to remember `printable`. Now the notice does it.
    notice = Notice("warn", "zone \x1b]0;pwned\x07 failed\nsecond line\u202e")
    assert notice.text == "zone \\x1b]0;pwned\\x07 failed\nsecond line\\u202e"
    assert Notice("warn", notice.text) == notice  # already printable text is left as it is
    assert printable_lines("a\x9bb\n\tc") == "a\\x9bb\n\\tc"
