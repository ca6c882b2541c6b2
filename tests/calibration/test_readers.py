"""onnxcomp.calibration.readers: every source validated against the model's inputs."""

import sys
import textwrap

import numpy as np
import pytest

from onnxcomp.calibration.readers import make_reader, validate_feed
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import InputSpec

SPECS = [InputSpec("image", np.float32, (None, 1, 4, 4)), InputSpec("ids", np.int64, (None, None))]


def good_feed(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((batch, 1, 4, 4)).astype(np.float32),
        "ids": rng.integers(0, 100, (batch, 5)).astype(np.int64),
    }


def write_npz(folder, name, feed):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / name, **feed)
    return folder / name


# -- .npz folders --------------------------------------------------------------------------------
def test_npz_folder_good(tmp_path):
    feeds = [good_feed(seed=i) for i in range(3)]
    for i, feed in enumerate(feeds):
        write_npz(tmp_path / "calib", f"{i:02d}.npz", feed)
    (tmp_path / "calib" / "README.txt").write_text("ignored")
    reader = make_reader(tmp_path / "calib", SPECS)
    for _ in range(2):  # re-iterable, sorted by file name
        got = list(reader)
        assert len(got) == 3
        for feed, expected in zip(got, feeds):
            assert set(feed) == {"image", "ids"}
            np.testing.assert_array_equal(feed["image"], expected["image"])
            np.testing.assert_array_equal(feed["ids"], expected["ids"])


def test_single_npz_file_and_same_kind_casts(tmp_path):
    feed = good_feed()
    feed["image"] = feed["image"].astype(np.float64)
    feed["ids"] = feed["ids"].astype(np.int32)
    path = write_npz(tmp_path, "one.npz", feed)
    (got,) = list(make_reader(str(path), SPECS))
    assert got["image"].dtype == np.float32 and got["ids"].dtype == np.int64


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda f: f.pop("ids"), r"bad\.npz: missing model input 'ids'"),
        (lambda f: f.update(pixels=f["image"]), r"bad\.npz: unknown input name 'pixels'"),
        (lambda f: f.update(image=f["image"][0]), r"bad\.npz: input 'image' has rank 3, the model expects rank 4"),
        (
            lambda f: f.update(image=(f["image"] * 10).astype(np.int64)),
            r"bad\.npz: input 'image' has dtype int64, the model expects float32",
        ),
        (
            lambda f: f.update(ids=f["ids"].astype(np.float32)),
            r"bad\.npz: input 'ids' has dtype float32, the model expects int64",
        ),
        (lambda f: f["image"].__setitem__((0, 0, 1, 2), np.nan), r"bad\.npz: input 'image' contains NaN or Inf"),
        (lambda f: f["image"].__setitem__((1, 0, 0, 0), -np.inf), r"bad\.npz: input 'image' contains NaN or Inf"),
        (
            lambda f: f.update(image=np.zeros((2, 1, 4, 5), np.float32)),
            r"bad\.npz: input 'image' has shape \(2, 1, 4, 5\)",
        ),
    ],
    ids=["missing", "unknown", "rank", "dtype_kind", "int_as_float", "nan", "inf", "fixed_dim"],
)
def test_npz_bad_sample_names_file_and_tensor(tmp_path, mutate, pattern):
    write_npz(tmp_path / "calib", "a_good.npz", good_feed())
    feed = good_feed(seed=1)
    mutate(feed)
    write_npz(tmp_path / "calib", "bad.npz", feed)
    reader = make_reader(tmp_path / "calib", SPECS)
    with pytest.raises(OnnxcompError, match=pattern):
        list(reader)


def test_npz_unreadable_file(tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(OnnxcompError, match=r"broken\.npz: not a readable \.npz file"):
        list(make_reader(tmp_path / "calib", SPECS))


def test_empty_folder(tmp_path):
    (tmp_path / "calib").mkdir()
    with pytest.raises(OnnxcompError, match=r"calib: calibration folder is empty"):
        make_reader(tmp_path / "calib", SPECS)


def test_folder_without_samples(tmp_path):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "notes.txt").write_text("x")
    with pytest.raises(OnnxcompError, match="no images or .npz files"):
        make_reader(tmp_path / "calib", SPECS)


def test_missing_source(tmp_path):
    with pytest.raises(OnnxcompError, match="calibration data not found"):
        make_reader(tmp_path / "nowhere", SPECS)


def test_validate_feed_rejects_non_dict():
    with pytest.raises(OnnxcompError, match="must be a dict"):
        validate_feed([1, 2], SPECS, "src")


# -- callables -------------------------------------------------------------------------------------
@pytest.fixture
def calib_module(tmp_path, monkeypatch):
    (tmp_path / "my_calib_data.py").write_text(
        textwrap.dedent(
            """
            import numpy as np

            CALLS = []

            def feeds():
                CALLS.append(1)
                for i in range(3):
                    yield {"image": np.full((1, 1, 4, 4), i, np.float32), "ids": np.zeros((1, 3), np.int64)}

            def bad():
                return [{"image": np.zeros((1, 1, 4, 4), np.float32)}]

            NOT_CALLABLE = 3

            def NOT_ITERABLE():
                return None
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_calib_data"
    sys.modules.pop("my_calib_data", None)


def test_module_function_reader(calib_module):
    reader = make_reader(f"{calib_module}:feeds", SPECS)
    first = [f["image"][0, 0, 0, 0] for f in reader]
    second = [f["image"][0, 0, 0, 0] for f in reader]  # re-iterable: the function is called again
    assert first == second == [0.0, 1.0, 2.0]
    assert len(sys.modules[calib_module].CALLS) == 2


def test_module_function_bad_sample_names_sample(calib_module):
    with pytest.raises(OnnxcompError, match=r"my_calib_data:bad sample 0: missing model input 'ids'"):
        list(make_reader(f"{calib_module}:bad", SPECS))


@pytest.mark.parametrize(
    "source, pattern",
    [
        ("no_such_module_xyz:feeds", "cannot import module 'no_such_module_xyz'"),
        ("my_calib_data:missing", "has no callable 'missing'"),
        ("my_calib_data:NOT_CALLABLE", "has no callable 'NOT_CALLABLE'"),
    ],
)
def test_module_function_errors(calib_module, source, pattern):
    with pytest.raises(OnnxcompError, match=pattern):
        make_reader(source, SPECS)


def test_python_callable_and_list():
    feeds = [good_feed(seed=i) for i in range(2)]
    assert len(list(make_reader(lambda: iter(feeds), SPECS))) == 2
    assert len(list(make_reader(feeds, SPECS))) == 2
    with pytest.raises(OnnxcompError, match="calibration list sample 0: missing model input 'image'"):
        list(make_reader([{"ids": feeds[0]["ids"]}], SPECS))


# -- text files through the MiniLM tokenizer ---------------------------------------------------
TEXT_SPECS = [InputSpec(n, np.int64, (None, None)) for n in ("input_ids", "attention_mask", "token_type_ids")]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from onnxcomp import models

    return models.tokenizer("minilm")


def test_text_file_with_minilm_tokenizer(tmp_path, minilm_tokenizer):
    lines = [f"sentence number {i} has {'many ' * i}words." for i in range(11)]
    path = tmp_path / "calib.txt"
    path.write_text("\n".join(lines[:5]) + "\n\n   \n" + "\n".join(lines[5:]) + "\n", encoding="utf-8")
    reader = make_reader(str(path), TEXT_SPECS, tokenizer=minilm_tokenizer)
    feeds = list(reader)
    assert [f["input_ids"].shape[0] for f in feeds] == [8, 3]  # blank lines skipped, batches of 8
    for feed, chunk in zip(feeds, (lines[:8], lines[8:])):
        assert set(feed) == {"input_ids", "attention_mask", "token_type_ids"}
        assert all(v.dtype == np.int64 for v in feed.values())
        assert feed["input_ids"].shape == feed["attention_mask"].shape == feed["token_type_ids"].shape
        expected = minilm_tokenizer(chunk)["input_ids"]
        for row, ids, mask in zip(expected, feed["input_ids"], feed["attention_mask"]):
            assert mask.sum() == len(row)  # padding to the longest line of the batch
            assert ids[: len(row)].tolist() == row
    assert feeds[0]["input_ids"][0, 0] == minilm_tokenizer.cls_token_id


def test_text_file_truncates_to_max_length(tmp_path, minilm_tokenizer):
    path = tmp_path / "long.txt"
    path.write_text("word " * 1000 + "\n", encoding="utf-8")
    (feed,) = list(make_reader(str(path), TEXT_SPECS, tokenizer=minilm_tokenizer))
    assert feed["input_ids"].shape == (1, 128)


def test_text_file_only_keeps_model_inputs(tmp_path, minilm_tokenizer):
    path = tmp_path / "calib.txt"
    path.write_text("a short sentence\n", encoding="utf-8")
    (feed,) = list(make_reader(str(path), TEXT_SPECS[:2], tokenizer=minilm_tokenizer))
    assert set(feed) == {"input_ids", "attention_mask"}


def test_text_file_errors(tmp_path, minilm_tokenizer):
    path = tmp_path / "calib.txt"
    path.write_text("hello world\n", encoding="utf-8")
    with pytest.raises(OnnxcompError, match="calib.txt: text calibration needs the model's tokenizer"):
        make_reader(str(path), TEXT_SPECS, tokenizer=None)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(OnnxcompError, match="empty.txt: calibration text file has no non-empty lines"):
        make_reader(str(empty), TEXT_SPECS, tokenizer=minilm_tokenizer)
    # a model input the tokenizer does not produce
    specs = [*TEXT_SPECS, InputSpec("position_ids", np.int64, (None, None))]
    with pytest.raises(OnnxcompError, match="missing model input 'position_ids'"):
        list(make_reader(str(path), specs, tokenizer=minilm_tokenizer))


def test_text_file_errors_name_the_file(tmp_path, minilm_tokenizer):
    path = tmp_path / "sentences.txt"
    path.write_text("hello world\n", encoding="utf-8")
    specs = [*TEXT_SPECS, InputSpec("position_ids", np.int64, (None, None))]
    with pytest.raises(OnnxcompError, match=r"sentences\.txt"):
        list(make_reader(str(path), specs, tokenizer=minilm_tokenizer))


def test_callable_returning_non_iterable(calib_module, tmp_path):
    with pytest.raises(OnnxcompError, match="my_calib_data:NOT_ITERABLE"):
        list(make_reader(f"{calib_module}:NOT_ITERABLE", SPECS))


def test_image_folder_feeds_the_digits_cnn(tmp_path):
    """PNGs of real digits come back as [1, 1, 8, 8] float feeds in [0, 1], in sorted file order."""
    from PIL import Image

    from onnxcomp.models import get

    images = get("digits").dataset()[0][:5, 0]  # float in [0, 1]
    for i, img in enumerate(images):
        Image.fromarray(np.rint(img * 255).astype(np.uint8), mode="L").save(tmp_path / f"{i:02d}.png")
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    spec = [InputSpec("image", np.float32, (None, 1, 8, 8))]
    feeds = list(make_reader(str(tmp_path), spec))
    assert len(feeds) == 5 and feeds[0]["image"].shape == (1, 1, 8, 8)
    np.testing.assert_allclose(feeds[3]["image"][0, 0], images[3], atol=0.5 / 255 + 1e-6)


def test_image_folder_needs_one_fixed_nchw_input(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(OnnxcompError, match="one NCHW input with fixed C, H, W"):
        make_reader(str(tmp_path), [InputSpec("image", np.float32, (None, 1, None, None))])
