"""NVENC export presets and NVDEC decoding: offered only where the hardware opens, refused in
one line elsewhere, and on a CPU-only machine the same reader path gives the software frames.

The tests marked ``gpu`` run where an NVIDIA encoder or decoder actually opens and skip here.
"""
from __future__ import annotations

import warnings
from fractions import Fraction

import av
import numpy as np
import pytest

from engine import cli
from engine.errors import UsageError
from engine.media import codecs, hwdecode
from engine.media.codecs import PRESETS, available_presets, check_quality, get_preset
from engine.media.frame import planes_from_av
from engine.media.hwdecode import as_software, device_problem
from engine.media.reader import VideoReader
from engine.media.writer import VideoWriter
from engine.project import ExportPrefs
from engine.render import ExportSettings
from tests.media_factory import make_video

NVENC = ("h264_nvenc", "hevc_nvenc")
no_nvenc = pytest.mark.skipif(codecs.hardware_available("h264_nvenc"),
                              reason="this machine has NVENC")
needs_nvenc = pytest.mark.skipif(not codecs.hardware_available("hevc_nvenc"),
                                 reason="needs an NVIDIA GPU with NVENC")
needs_nvdec = pytest.mark.skipif(device_problem("cuda") is not None,
                                 reason="needs an NVIDIA GPU (NVDEC)")


@pytest.fixture
def nvenc_here(monkeypatch):
    """Pretend the NVENC encoders open, to check what is decided before any encoding."""
    real = codecs.hardware_available
    monkeypatch.setattr(codecs, "hardware_available",
                        lambda name: name in NVENC or real(name))


def _frames(path, hwdecode_kind=""):
    with VideoReader(path, hwdecode=hwdecode_kind) as reader:
        return [(f.pix_fmt, f.planes) for f in reader.frames()]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        fa == fb and all(np.array_equal(x, y) for x, y in zip(pa, pb))
        for (fa, pa), (fb, pb) in zip(a, b))


# --- NVENC presets ------------------------------------------------------------------------

def test_hardware_probe_opens_the_encoder_not_just_looks_it_up():
    assert codecs.hardware_available("libx264")  # listed and opens
    assert not codecs.hardware_available("no_such_encoder")
    if "h264_nvenc" in av.codecs_available and not codecs.hardware_available("h264_nvenc"):
        # Listed by this PyAV build, yet it does not open without the GPU and driver.
        with pytest.raises(av.FFmpegError):
            cc = av.CodecContext.create("h264_nvenc", "w")
            cc.width, cc.height, cc.pix_fmt = 256, 256, "yuv420p"
            cc.time_base = Fraction(1, 25)
            cc.open()


@no_nvenc
@pytest.mark.parametrize("codec,software", [("h264_nvenc", "h264"), ("hevc_nvenc", "h265")])
def test_unavailable_nvenc_is_one_line_naming_the_software_codec(codec, software, tmp_path):
    assert codec not in available_presets() and codec in PRESETS
    message = (f"the {codec} codec needs an NVIDIA GPU with NVENC and its driver, which this "
               f"machine lacks: use {software} instead")
    with pytest.raises(UsageError) as caught:
        get_preset(codec)
    assert str(caught.value) == message
    # The API and a saved project's preferences are refused when the export is built.
    with pytest.raises(UsageError, match=f"^{message}$"):
        ExportSettings(output=str(tmp_path / "o.mp4"), codec=codec)
    with pytest.raises(UsageError, match=f"^{message}$"):
        ExportPrefs(codec=codec, quality={"crf": "19"}).to_export_settings(tmp_path / "o.mp4")
    assert list(tmp_path.iterdir()) == []


@no_nvenc
def test_cli_offers_nvenc_only_where_it_opens_and_says_why_not(tmp_path, capsys):
    render = cli.build_parser()._subparsers._group_actions[0].choices["render"]
    codec = next(a for a in render._actions if a.dest == "codec")
    assert sorted(codec.choices) == ["dnxhr", "ffv1", "h264", "h265", "prores"]
    with pytest.raises(SystemExit) as exited:  # refused by the parser, as a bad choice is
        cli.main(["render", str(tmp_path / "missing.mp4"), "--audio", str(tmp_path / "d.wav"),
                  "--codec", "hevc_nvenc", "-o", str(tmp_path / "o.mp4")])
    assert exited.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("redub render: error: argument --codec: the hevc_nvenc codec needs an "
                    "NVIDIA GPU with NVENC and its driver, which this machine lacks: use h265 "
                    "instead")
    assert list(tmp_path.iterdir()) == []


def test_cli_takes_nvenc_where_it_opens_and_checks_its_quality(nvenc_here, tmp_path, capsys):
    # Refused on its quality, so before the (missing) input is opened or NVENC is used.
    code = cli.main(["render", str(tmp_path / "missing.mp4"), "--audio", str(tmp_path / "d.wav"),
                     "--codec", "h264_nvenc", "--crf", "0", "-o", str(tmp_path / "o.mp4")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "redub render: error: crf '0' is not valid for h264_nvenc: use a number from 1 to 51 "
        "(lower is better)")


@pytest.mark.parametrize("codec,quality,words", [
    ("hevc_nvenc", {"crf": "0"}, "crf '0' is not valid for hevc_nvenc: use a number from 1 to 51"),
    ("h264_nvenc", {"crf": "51.5"}, "crf '51.5' is not valid for h264_nvenc"),
    ("h264_nvenc", {"preset": "medium"},
     "unknown h264_nvenc preset 'medium': use one of p1, p2, p3, p4, p5, p6, p7"),
    ("h264", {"preset": "p5"}, "unknown h264 preset 'p5': use one of ultrafast, superfast"),
])
def test_quality_is_checked_on_each_codecs_own_scale(nvenc_here, codec, quality, words):
    with pytest.raises(UsageError, match=f"^{words}"):
        check_quality(codec, quality)


def test_crf_names_every_codec_that_takes_it_where_nvenc_opens(nvenc_here):
    with pytest.raises(UsageError, match=r"^the ffv1 codec has no crf setting \(only h264, "
                                         r"h265, h264_nvenc and hevc_nvenc have one\)$"):
        check_quality("ffv1", {"crf": "18"})


def test_nvenc_constant_quality_options(nvenc_here):
    assert check_quality("hevc_nvenc", {"crf": "23.5", "preset": "p7"}) == {"crf": "23.5",
                                                                           "preset": "p7"}
    s = PRESETS["h264_nvenc"].settings("yuv420p", 1920, 1080, {"crf": "23", "preset": "p7"})
    # crf is NVENC's cq; vbr with no bit-rate target holds that quality.
    assert s.encoder == "h264_nvenc" and s.options == {
        "cq": "23", "preset": "p7", "tune": "hq", "rc": "vbr", "b": "0"}
    assert PRESETS["hevc_nvenc"].settings("yuv420p", 64, 64).options["cq"] == "21"


@pytest.mark.parametrize("codec,source,size,pix_fmt,note", [
    ("h264_nvenc", "yuv420p", (1920, 1080), "yuv420p", ""),
    ("h264_nvenc", "yuvj420p", (1920, 1080), "yuv420p", ""),
    ("hevc_nvenc", "yuv420p10le", (1920, 1080), "p010le", ""),
    ("h264_nvenc", "yuv420p10le", (1920, 1080), "yuv420p", "NVENC H.264 is 8-bit"),
    ("hevc_nvenc", "yuv422p10le", (1920, 1080), "yuv444p16le", "NVENC takes 4:2:0 or 4:4:4"),
    ("h264_nvenc", "yuv422p", (1920, 1080), "yuv444p", "NVENC takes 4:2:0 or 4:4:4"),
    ("hevc_nvenc", "yuv444p12le", (1920, 1080), "yuv444p16le", "at most 10 bits"),
    ("hevc_nvenc", "rgb24", (1920, 1080), "yuv444p", ""),
    ("h264_nvenc", "yuv420p", (1919, 1080), "yuv444p", "odd frame size"),
])
def test_nvenc_pixel_formats_follow_the_source(nvenc_here, codec, source, size, pix_fmt, note):
    settings = PRESETS[codec].settings(source, *size)
    assert settings.pix_fmt == pix_fmt
    assert settings.pix_fmt in {f.name for f in av.codec.Codec(codec, "w").video_formats}
    assert (note in settings.note) if note else settings.note == ""


def test_export_dialog_offers_nvenc_only_where_it_opens(qtbot, monkeypatch):
    from desktop.export_dialog import QUALITY, ExportDialog

    prefs = ExportPrefs(codec="hevc_nvenc", quality={"crf": "21", "preset": "p5"})
    monkeypatch.setattr(codecs, "hardware_available", lambda name: name not in NVENC)
    dialog = ExportDialog(prefs, "/tmp/out.mp4", has_ranges=False)
    qtbot.addWidget(dialog)
    offered = [dialog.codec.itemData(i) for i in range(dialog.codec.count())]
    assert offered == ["h264", "h265", "prores", "dnxhr", "ffv1"]
    assert dialog.codec.currentData() == "h264"  # a project saved on a GPU machine

    monkeypatch.setattr(codecs, "hardware_available", lambda name: True)
    dialog = ExportDialog(prefs, "/tmp/out.mp4", has_ranges=False)
    qtbot.addWidget(dialog)
    assert dialog.codec.currentText() == "H.265 (NVENC)"
    assert dialog.quality.currentText() == "Standard (CQ 21)"
    for codec, presets in QUALITY.items():  # every named quality is valid for its codec
        for options in presets.values():
            assert check_quality(codec, options) == options


@needs_nvenc
@pytest.mark.parametrize("codec,source,decoded", [
    ("h264_nvenc", "yuv420p", "yuv420p"), ("hevc_nvenc", "yuv420p10le", "yuv420p10le")])
def test_nvenc_export_plays_back_close_to_the_source(tmp_path, codec, source, decoded):
    src = make_video(tmp_path / "src.mp4", frames=24, size=(256, 144), pix_fmt=source,
                     options={"crf": "0"} if source.endswith("10le") else None)
    out = tmp_path / "out.mp4"
    with VideoReader(src) as reader, VideoWriter(out, reader.info, codec=codec,
                                                 sources=[src]) as writer:
        originals = [f for f in reader.frames()]
        for frame in originals:
            writer.write(frame)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == ("h264" if codec == "h264_nvenc"
                                                         else "hevc")
        if codec == "hevc_nvenc":
            assert c.streams.video[0].codec_context.codec_tag == "hvc1"
    with VideoReader(out, hwdecode="") as reader:
        got = list(reader.frames())
    assert len(got) == len(originals) and got[0].pix_fmt == decoded
    for a, b in zip(originals, got):
        err = a.planes[0].astype(np.float64) - b.planes[0]
        peak = (1 << a.bit_depth) - 1
        assert 10 * np.log10(peak ** 2 / max(np.mean(err ** 2), 1e-9)) > 35  # PSNR of luma


# --- hardware decoding --------------------------------------------------------------------

@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(hwdecode, "_warned", set())


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le"])
def test_hardware_decode_without_the_device_falls_back_with_one_warning(
        tmp_path, monkeypatch, fresh_warnings, pix_fmt):
    if device_problem("cuda") is None:
        pytest.skip("this machine has a CUDA device")
    clip = make_video(tmp_path / "c.mp4", frames=30, pix_fmt=pix_fmt)
    software = _frames(clip)
    monkeypatch.setenv(hwdecode.ENV, "cuda")
    with pytest.warns(RuntimeWarning) as caught:
        hardware = _frames(clip, None)  # the environment asks for NVDEC
    assert [str(w.message) for w in caught] == [
        f"hardware decoding with cuda is not available: {device_problem('cuda')}; decoding "
        "in software"]
    assert "\n" not in str(caught[0].message)
    assert _same(hardware, software) and hardware[0][0] == pix_fmt
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        with VideoReader(clip) as reader:
            assert np.array_equal(reader.frame(17).planes[0], software[17][1][0])


def test_unknown_device_type_is_named_with_what_the_build_has(tmp_path, fresh_warnings):
    clip = make_video(tmp_path / "c.mp4", frames=4)
    with pytest.warns(RuntimeWarning, match=r"^hardware decoding with nosuch is not available: "
                                            r"this FFmpeg build has no 'nosuch' device \(it has"):
        frames = _frames(clip, "nosuch")
    assert _same(frames, _frames(clip))


def test_software_decoding_is_the_default(tmp_path, monkeypatch, fresh_warnings):
    clip = make_video(tmp_path / "c.mp4", frames=4)
    for value in ("", "off", "0"):
        monkeypatch.setenv(hwdecode.ENV, value)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert hwdecode.requested() is None and len(_frames(clip, None)) == 4


@pytest.mark.parametrize("pix_fmt,device_formats", [
    ("yuv420p", ["nv12"]), ("yuv420p10le", ["p010le"]), ("yuv422p", ["nv16"]),
    ("yuv422p10le", ["p210le"]), ("yuv444p", ["yuv444p"]),
    ("yuv444p10le", ["yuv444p16le", "yuv444p10msble"]),
])
def test_downloaded_pictures_become_the_software_planes_exactly(tmp_path, pix_fmt,
                                                                device_formats):
    # What NVDEC hands back (interleaved chroma, samples in the high bits) goes through the
    # reader's repack to the planes the software decoder gives, bit for bit.
    clip = make_video(tmp_path / "c.mkv", frames=12, size=(162, 96), pix_fmt=pix_fmt,
                      options={"crf": "0"} if "10" in pix_fmt else None)
    with VideoReader(clip, hwdecode="") as reader:
        frames = list(reader.frames())
    assert frames[0].pix_fmt == pix_fmt
    for device_format in device_formats:
        for frame in frames:
            downloaded = frame.to_av().reformat(format=device_format)
            assert downloaded.format.name == device_format
            repacked = as_software(downloaded, pix_fmt)
            assert repacked.format.name == pix_fmt
            assert all(np.array_equal(a, b) for a, b in zip(planes_from_av(repacked),
                                                            frame.planes))


@needs_nvdec
@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_nvdec_frames_equal_software_decoding(tmp_path, fresh_warnings, codec):
    clip = make_video(tmp_path / "c.mp4", frames=40, size=(320, 192), codec=codec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the device opened: no fallback
        with VideoReader(clip, hwdecode="cuda") as reader:
            hardware = [(f.pix_fmt, f.planes) for f in reader.frames()]
    with hwdecode.open_decoding(clip, "cuda") as container:
        assert container.streams.video[0].codec_context.is_hwaccel
    assert _same(hardware, _frames(clip))  # H.264/HEVC decoding is bit-exact by the standard
