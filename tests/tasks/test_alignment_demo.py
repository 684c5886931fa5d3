import pytest
import torch

from attnkit.attention.scoring import make_score
from attnkit.cli.main import main
from attnkit.tasks.demo import make_batch, train_alignment


def test_batch_answer_is_the_value_paired_with_the_query_key():
    keys, values, query, pos, answer = make_batch(64, 8, 32, torch.Generator().manual_seed(0))
    assert (keys.gather(1, pos[:, None]) == query).all()
    assert (values.gather(1, pos[:, None])[:, 0] == answer).all()
    assert all(len(set(row.tolist())) == 8 for row in keys)  # distinct keys: the query is unambiguous


@pytest.mark.parametrize("score", ["additive", "bilinear"])
def test_each_scoring_function_learns_the_alignment(score):
    r = train_alignment(score, steps=150, pairs=6)
    assert r.accuracy > 0.9 and r.alignment > 0.9, r


def test_cli_demo_writes_png_and_rejects_unknown_score(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown scoring function"):
        make_score("cosine", 4)
    out = tmp_path / "w.png"
    assert main(["attention-demo", "--steps", "60", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert all(s in printed for s in ("additive", "dot", "scaled_dot", "bilinear"))
