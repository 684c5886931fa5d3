import gzip
import re

import pytest

from attnkit.data.lines import decode_lines, decode_text, read_lines
from attnkit.data.parallel import read_lines as read_parallel_lines
from attnkit.data.text import read_text
from attnkit.data.tsv import read_tsv
from attnkit.errors import InputError


def test_lines_split_at_newline_only() -> None:
    data = "\ufeffa\r\n\r\nb\x0cc\u2028d\n\ne".encode()
    assert decode_lines(data, "x") == ["a", "", "b\x0cc\u2028d", "", "e"]
    assert decode_lines(b"", "x") == [] and decode_lines(b"\n", "x") == [""]
    assert decode_lines(b"a\r\r\n", "x") == ["a\r"]  # only the \r of a \r\n line end goes
    assert decode_text("\ufeffh\u00e9\n".encode(), "x") == "h\u00e9\n"


@pytest.mark.parametrize(
    "data, line, offset",
    [(b"\xff", 1, 0), (b"ok\nok\n\xe9t\xe9\n", 3, 6), (b"a\r\nb\r\nc\xc3(", 3, 7)],
)
def test_error_names_source_line_and_byte(data: bytes, line: int, offset: int) -> None:
    with pytest.raises(InputError) as err:
        decode_lines(data, "in.txt")
    message = str(err.value)
    assert re.fullmatch(rf"in\.txt is not valid UTF-8 \(line {line}: .+ at byte {offset}\)", message), message
    with pytest.raises(InputError) as err_text:
        decode_text(data, "in.txt")
    assert str(err_text.value) == message


def test_every_reader_reports_the_same_words(tmp_path) -> None:
    """Plain files, gzip files, TSV files and whole texts all go through decode_text."""
    data = b"1\tfine\n0\tbad \xff\n"
    (tmp_path / "a.txt").write_bytes(data)
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(data))
    expected = "is not valid UTF-8 (line 2: invalid start byte at byte 13)"
    for reader, path in ((read_lines, "a.txt"), (read_parallel_lines, "a.txt"), (read_parallel_lines, "a.txt.gz"),
                         (read_tsv, "a.txt"), (read_text, "a.txt")):
        with pytest.raises(InputError) as err:
            reader(tmp_path / path)
        assert str(err.value) == f"{tmp_path / path} {expected}", (reader, str(err.value))
