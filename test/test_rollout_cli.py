"""astra-rollout: the README's model-API walk-through without ROS."""

import json

import numpy as np
import pytest
from PIL import Image

from astra_ros.cli.rollout import main, panning_scene


def test_rollout_streams_whole_chunks_and_writes_the_strip(tmp_path, capsys):
    out = tmp_path / "strip.png"
    assert main(["--checkpoint", "random", "--preset", "tiny", "--observe", "4", "--predict", "3",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames_predicted"] == 4  # 3 frames asked, rounded up to whole chunks of 2
    assert len(summary["chunk_latency_s"]) == 2
    image = np.asarray(Image.open(out))
    # 2 rows of 4 tiles, random:tiny's 32 px (as every tool draws it) at 2x, a label column
    assert image.shape == (2 * 2 * 32, 70 + 4 * 2 * 32, 3)
    observed, predicted = image[:64, 70:], image[64:, 70:]
    frames, _ = panning_scene(8, (32, 32), seed=0)
    np.testing.assert_array_equal(observed[::2, ::2], np.concatenate(list(frames[:4]), axis=1))
    assert (predicted != 255).any()  # the predictions are drawn, not left blank


def test_the_panning_scene_moves_as_its_actions_say():
    frames, actions = panning_scene(3, (16, 32), seed=0, speed_px=4.0)
    np.testing.assert_array_equal(frames[1][:, :-4], frames[0][:, 4:])  # the view slides 4 px a frame
    assert np.allclose(actions[:, 1], -4.0 / 32)


@pytest.mark.parametrize("args, message", [
    (["--observe", "1"], "give at least 2"),
])
def test_rollout_refuses_what_it_cannot_do_with_a_message(tmp_path, caplog, args, message):
    assert main(["--checkpoint", "random", "--preset", "tiny", "--out", str(tmp_path / "x.png")] + args) == 2
    assert message in caplog.text and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args", [["--predict", "0"], ["--observe", "-1"]])
def test_rollout_arguments_out_of_range_are_usage_errors(args):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", "random"] + args)
    assert exit_info.value.code == 2


def test_random_preset_is_spelt_as_the_other_tools_spell_it(tmp_path, capsys):
    for spelling in (["--checkpoint", "random:tiny"], ["--checkpoint", "random", "--preset", "tiny"]):
        assert main([*spelling, "--predict", "2", "--out", str(tmp_path / "s.png")]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frames_predicted"] == 2
    assert np.asarray(Image.open(tmp_path / "s.png")).shape[0] == 2 * 2 * 32  # random:tiny is 32 px everywhere
    assert main(["--checkpoint", "random:nope", "--out", str(tmp_path / "s.png")]) == 2
