"""`energy_core.checks.open_regular`, which the series reader and the run record's reader and writer
share: what their own tests cannot see, the descriptors it leaves open and their mode."""

from __future__ import annotations

import errno
import os

import pytest

from energy_core.checks import open_regular


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists open descriptors through /proc")
def test_a_fifo_or_a_folder_is_refused_at_once_and_nothing_is_left_open(tmp_path) -> None:
    os.mkfifo(tmp_path / "fifo")
    before = open_descriptors()
    assert open_regular(tmp_path / "fifo") is None  # with no writer: a blocking open would wait for ever
    assert open_regular(tmp_path) is None
    assert open_descriptors() == before


def test_a_regular_file_is_opened_blocking_and_a_link_only_without_o_nofollow(tmp_path) -> None:
    (tmp_path / "file").write_text("line\n")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    for path in (tmp_path / "file", tmp_path / "link"):
        fd = open_regular(path)
        assert fd is not None and os.get_blocking(fd)  # O_NONBLOCK was for the open only
        with open(fd, encoding="utf-8") as handle:
            assert handle.read() == "line\n"
    with pytest.raises(OSError) as raised:
        open_regular(tmp_path / "link", os.O_RDONLY | os.O_NOFOLLOW)
    assert raised.value.errno == errno.ELOOP
