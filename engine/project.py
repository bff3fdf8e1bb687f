"""The ``.redub`` project file: what the user set up around one clip, as versioned JSON.

A project names its media (the clip and the dub tracks, each with a fingerprint so a moved
file can be found again), the ranges to re-sync with their settings, the manual corrections
(keyframed mask shapes, keep-original spans, motion curves: ``engine.maskedit``) and the export
settings. It is plain data: the desktop app edits it, the engine's own types
come from the ``to_*`` conversions.

Files are written atomically (a temporary file beside the target, then ``os.replace``), so a
crash or a full disk never leaves a half-written project. Older versions are brought up to date
by :func:`migrate` on load. Autosaves live in ``cache_dir()/autosave`` (see :class:`Recovery`).
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

from engine.errors import RedubError, UsageError
from engine.face.analysis import Target
from engine.mask import MaskSettings
from engine.maskedit import Corrections
from engine.media.probe import probe
from engine.paths import cache_dir
from engine.pipeline import SyncSettings
from engine.render import ExportSettings

FORMAT = "redub-project"
VERSION = 2
SUFFIX = ".redub"
_DEFAULTS = SyncSettings()
# Relinking looks this many folder levels below each search folder (project/media/clip.mp4).
_SEARCH_DEPTH = 2


@dataclass
class MediaRef:
    """A media file and its fingerprint, to recognise it again after it has moved.

    ``mtime`` only breaks ties: copying a file gives it a new one.
    """

    path: str
    size: int | None = None
    mtime: float | None = None
    duration: float | None = None
    frame_rate: float | None = None  # None for audio

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> MediaRef:
        """Fingerprint ``path`` (probes it; raises RedubError when it is not readable media)."""
        path = os.path.abspath(os.fspath(path))
        info = probe(path)
        st = os.stat(path)
        return cls(path=path, size=st.st_size, mtime=st.st_mtime, duration=info.duration,
                   frame_rate=float(info.video[0].frame_rate) if info.video else None)

    @property
    def exists(self) -> bool:
        return os.path.isfile(self.path)

    def matches(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` has this fingerprint (size first: probing is the slow part)."""
        try:
            if self.size is not None and os.path.getsize(path) != self.size:
                return False
            if self.duration is None and self.frame_rate is None:
                return True
            info = probe(path)
        except (OSError, RedubError):
            return False
        if self.duration is not None and abs(info.duration - self.duration) > 1e-3:
            return False
        rate = float(info.video[0].frame_rate) if info.video else None
        if self.frame_rate is None or rate is None:
            return self.frame_rate == rate
        return abs(rate - self.frame_rate) < 1e-3


@dataclass
class DubTrack:
    media: MediaRef
    offset: float = 0.0  # seconds on the clip's timeline where the dub starts
    gain_db: float = 0.0


@dataclass
class RangeSettings:
    """How one range is re-synced; defaults are the engine's."""

    backend: str = _DEFAULTS.backend
    stabilizer: str = _DEFAULTS.stabilizer  # face crops of the neural backends
    restorer: str = _DEFAULTS.restorer
    restorer_strength: float = _DEFAULTS.restore_strength
    mask_kind: str = _DEFAULTS.mask.kind
    mask_dilation: float = _DEFAULTS.mask.dilation
    mask_feather: float = _DEFAULTS.mask.feather
    openness_gain: float = _DEFAULTS.openness_gain
    audio_offset_ms: float = _DEFAULTS.audio_offset_ms
    target: Target | None = None  # the face nearest this point; None: the largest

    def to_sync_settings(self, train_range: tuple[float, float] | None = None) -> SyncSettings:
        """The engine's settings (``train_range``: footage to learn from; None: the default)."""
        return SyncSettings(backend=self.backend, stabilizer=self.stabilizer,
                            train_range=train_range,
                            restorer=self.restorer,
                            restore_strength=self.restorer_strength,
                            openness_gain=self.openness_gain,
                            audio_offset_ms=self.audio_offset_ms,
                            mask=MaskSettings(kind=self.mask_kind, dilation=self.mask_dilation,
                                              feather=self.mask_feather),
                            target=self.target)


@dataclass
class SyncRange:
    start: float  # seconds
    end: float
    settings: RangeSettings = field(default_factory=RangeSettings)


@dataclass
class ExportPrefs:
    output: str | None = None
    codec: str = "h264"
    quality: dict[str, str] = field(default_factory=dict)
    audio_mode: str = "ranges"

    def to_export_settings(self, output: str | os.PathLike | None = None) -> ExportSettings:
        """The engine's export settings, writing to ``output`` (default: the saved one)."""
        target = os.fspath(output) if output is not None else self.output
        if not target:
            raise UsageError("no output file chosen for the export")
        return ExportSettings(output=target, codec=self.codec, quality=dict(self.quality),
                              audio_mode=self.audio_mode)


@dataclass
class RelinkReport:
    relinked: dict[str, str] = field(default_factory=dict)  # old path -> new path
    missing: list[str] = field(default_factory=list)  # still not found

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class Project:
    media: MediaRef
    dubs: list[DubTrack] = field(default_factory=list)
    ranges: list[SyncRange] = field(default_factory=list)
    # Mask keyframes, exclusions, brush strokes, keep-original spans and curves, by frame.
    corrections: Corrections = field(default_factory=Corrections)
    export: ExportPrefs = field(default_factory=ExportPrefs)
    version: int = VERSION

    # -- files ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> Project:
        """Read a project file, migrating older versions; RedubError if it cannot be used."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise RedubError("project file not found", path) from None
        except OSError as exc:
            raise RedubError(f"cannot read project ({exc.strerror})", path) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RedubError(f"not a Redub project or damaged ({_short(exc)})", path) from None
        try:
            return cls.from_dict(migrate(data))
        except RedubError as exc:
            raise RedubError(exc.problem, path) from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the project to ``path`` atomically: the old file stays whole on any failure."""
        write_atomic(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "media": _media_dict(self.media),
            "dubs": [{"media": _media_dict(d.media), "offset": d.offset, "gain_db": d.gain_db}
                     for d in self.dubs],
            "ranges": [{"start": r.start, "end": r.end, "settings": _settings_dict(r.settings)}
                       for r in self.ranges],
            "corrections": self.corrections.to_dict(),
            "export": {"output": self.export.output, "codec": self.export.codec,
                       "quality": dict(self.export.quality),
                       "audio_mode": self.export.audio_mode},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Project:
        """A project from current-version data; RedubError naming what is wrong."""
        try:
            export = data.get("export", {})
            return cls(
                media=_media_ref(data["media"]),
                dubs=[DubTrack(_media_ref(d["media"]), float(d.get("offset", 0.0)),
                               float(d.get("gain_db", 0.0))) for d in data.get("dubs", [])],
                ranges=[SyncRange(float(r["start"]), float(r["end"]),
                                  _range_settings(r.get("settings", {})))
                        for r in data.get("ranges", [])],
                corrections=Corrections.from_dict(data.get("corrections", {})),
                export=ExportPrefs(output=export.get("output"),
                                   codec=str(export.get("codec", "h264")),
                                   quality={str(k): str(v)
                                            for k, v in export.get("quality", {}).items()},
                                   audio_mode=str(export.get("audio_mode", "ranges"))),
            )
        except KeyError as exc:
            raise RedubError(f"damaged project: missing {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError, UsageError) as exc:
            raise RedubError(f"damaged project ({_short(exc)})") from None

    # -- media ---------------------------------------------------------------------------

    def sync_settings(self, sync_range: SyncRange) -> SyncSettings:
        """The engine's settings for one of the ranges, as the editor renders it: learning from
        the whole clip, which the editor has analysed already (the engine's default, 30 s
        around the range, would analyse a long clip's window a second time)."""
        whole = (0.0, self.media.duration) if self.media.duration else None
        return sync_range.settings.to_sync_settings(train_range=whole)

    def media_refs(self) -> Iterator[MediaRef]:
        """Every file the project uses: the clip, then the dubs."""
        yield self.media
        for dub in self.dubs:
            yield dub.media

    def relink(self, project_dir: str | os.PathLike,
               search_dirs: Sequence[str | os.PathLike] = ()) -> RelinkReport:
        """Point missing media at files with the same name and fingerprint.

        Looks in ``project_dir`` and ``search_dirs`` (and up to two folder levels below
        them); updates the paths in place and reports what is still missing.
        """
        report = RelinkReport()
        lost = [ref for ref in self.media_refs() if not ref.exists]
        if not lost:
            return report
        index = _files_by_name([project_dir, *search_dirs],
                               {os.path.basename(ref.path) for ref in lost})
        for ref in lost:
            found = [p for p in index.get(os.path.basename(ref.path), []) if ref.matches(p)]
            if not found:
                report.missing.append(ref.path)
                continue
            # A moved file keeps its mtime, a copy does not: prefer the moved one.
            found.sort(key=lambda p: os.path.getmtime(p) != ref.mtime)
            report.relinked[ref.path] = ref.path = found[0]
        return report


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Per-frame mask polygons become one-key layers of the corrections: a ``replace`` polygon
    the edited outline on its frame (one per frame; any more are added to it), the others
    add/exclude shapes on their frame."""
    layers: list[dict[str, Any]] = []
    outline: dict[str, Any] = {}
    for frame, polys in data.pop("mask_edits", {}).items():
        for poly in polys:
            mode = poly.get("mode", "exclude")
            key = {"points": poly["points"]}
            if mode == "replace" and frame not in outline:
                outline[frame] = key
            else:
                layers.append({"role": "add" if mode == "replace" else mode,
                               "keys": {frame: key}})
    if outline:
        layers.insert(0, {"role": "outline", "keys": outline})
    data["corrections"] = {"layers": layers}
    return data


# Version n -> n + 1 upgrades of the raw JSON, applied in turn by migrate().
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


def migrate(data: Any) -> dict[str, Any]:
    """Bring raw project JSON of any known version up to :data:`VERSION`."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RedubError("not a Redub project file")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise RedubError(f"damaged project: bad version {version!r}")
    if version > VERSION:
        raise RedubError(f"project version {version} is newer than this Redub Studio "
                         f"supports ({VERSION}); update the app to open it")
    while version < VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["version"] = version
    return data


def autosave_path(project_path: str | os.PathLike | None) -> Path:
    """Where the autosave of the project at ``project_path`` (None: untitled) is kept.

    One file per project, named after it and a hash of its full path, in the user cache.
    """
    folder = cache_dir() / "autosave"
    if project_path is None:
        return folder / f"untitled{SUFFIX}"
    full = os.path.normcase(os.path.abspath(os.fspath(project_path)))
    digest = hashlib.sha1(full.encode("utf-8")).hexdigest()[:12]
    return folder / f"{Path(full).stem}-{digest}{SUFFIX}"


class Recovery:
    """Autosaves of one project, and crash recovery from them.

    The editor calls :meth:`write` every so often; on opening a project, :meth:`pending` says
    whether an autosave newer than the saved file survived a crash; :meth:`save` is a clean save
    and :meth:`discard` a clean end (the autosave goes either way).

    A process that writes an autosave holds a lock file beside it (naming the project) until it
    discards it; the system drops the lock when the process dies, ``kill -9`` included. So an
    autosave whose lock nobody else holds is work a crash left behind, and one another running
    editor still holds is not offered.
    """

    def __init__(self, project_path: str | os.PathLike | None) -> None:
        self.project_path = Path(project_path) if project_path is not None else None

    @property
    def path(self) -> Path:
        return autosave_path(self.project_path)

    @classmethod
    def left_behind(cls) -> list[Recovery]:
        """Autosaves that crashed sessions left (their lock files name the project), newest
        first."""
        found: list[tuple[int, Recovery]] = []
        for lock in (cache_dir() / "autosave").glob("*.lock"):
            if lock in _SessionLock.held:
                continue  # this process is still working on it
            auto = lock.with_suffix(SUFFIX)
            try:
                named = lock.read_text(encoding="utf-8").strip()
                mtime = auto.stat().st_mtime_ns
            except (OSError, UnicodeDecodeError):
                continue  # a lock without its autosave: nothing to recover
            recovery = cls(named or None)
            if recovery.path == auto and recovery.pending() is not None:
                found.append((mtime, recovery))
        return [r for _, r in sorted(found, key=lambda x: -x[0])]

    def write(self, project: Project) -> None:
        """Autosave ``project`` (atomically, like a save)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _SessionLock.take(self.path.with_suffix(".lock"),
                          "" if self.project_path is None else str(self.project_path))
        write_atomic(self.path, json.dumps(project.to_dict()) + "\n")

    def pending(self) -> Path | None:
        """The autosave, if a crash left it and it is newer than the saved project (or there is
        no saved file)."""
        try:
            auto = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if _SessionLock.held_elsewhere(self.path.with_suffix(".lock")):
            return None  # another running editor's work in progress
        if self.project_path is None:
            return self.path
        try:
            saved = self.project_path.stat().st_mtime_ns
        except FileNotFoundError:
            return self.path
        return self.path if auto > saved else None

    def load(self) -> Project:
        """The autosaved project."""
        return Project.load(self.path)

    def discard(self) -> None:
        """A clean end: the autosave and its lock go (not another running editor's)."""
        lock = self.path.with_suffix(".lock")
        if _SessionLock.held_elsewhere(lock):
            return
        self.path.unlink(missing_ok=True)
        _SessionLock.drop(lock)

    def save(self, project: Project, path: str | os.PathLike | None = None) -> None:
        """A clean save to ``path`` (default: the project's own; Save As re-targets)."""
        target = Path(path) if path is not None else self.project_path
        if target is None:
            raise UsageError("choose where to save the project")
        previous = Recovery(self.project_path)
        project.save(target)
        self.project_path = target
        previous.discard()
        self.discard()  # an autosave left under the new name is older than this save


class _SessionLock:
    """Lock files this process holds, kept open (and locked) until dropped or the process
    ends."""

    held: dict[Path, IO[str]] = {}

    @classmethod
    def take(cls, path: Path, text: str) -> None:
        if path in cls.held:
            return
        f = open(path, "a+", encoding="utf-8")
        if not _lock(f):
            f.close()  # another editor has it: its autosave, our writes; no lock to keep
            return
        f.seek(0)
        f.truncate()
        f.write(text)
        f.flush()
        cls.held[path] = f

    @classmethod
    def drop(cls, path: Path) -> None:
        f = cls.held.pop(path, None)
        if f is not None:
            _unlock(f)
            f.close()
        path.unlink(missing_ok=True)

    @classmethod
    def held_elsewhere(cls, path: Path) -> bool:
        if path in cls.held or not path.exists():
            return False
        try:
            with open(path, "a+", encoding="utf-8") as f:
                if not _lock(f):
                    return True
                _unlock(f)
                return False
        except OSError:
            return False


# Past any path written in a lock file: Windows locks are mandatory, and readers must get in.
_LOCK_OFFSET = 1 << 30


def _lock(f: IO[str]) -> bool:
    """Lock an open file for this process without waiting; False when another holds it."""
    try:
        if os.name == "nt":
            import msvcrt
            os.lseek(f.fileno(), _LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _unlock(f: IO[str]) -> None:
    if os.name == "nt":
        import msvcrt
        os.lseek(f.fileno(), _LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and move it into place."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data does
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise RedubError(f"cannot save ({exc.strerror or exc}); the file on disk is unchanged",
                         path) from None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _media_dict(ref: MediaRef) -> dict[str, Any]:
    return {"path": ref.path, "size": ref.size, "mtime": ref.mtime, "duration": ref.duration,
            "frame_rate": ref.frame_rate}


def _media_ref(d: dict[str, Any]) -> MediaRef:
    def num(key: str, kind: type) -> Any:
        return None if d.get(key) is None else kind(d[key])

    return MediaRef(path=str(d["path"]), size=num("size", int), mtime=num("mtime", float),
                    duration=num("duration", float), frame_rate=num("frame_rate", float))


def _settings_dict(s: RangeSettings) -> dict[str, Any]:
    return {"backend": s.backend, "stabilizer": s.stabilizer, "restorer": s.restorer,
            "restorer_strength": s.restorer_strength, "mask_kind": s.mask_kind,
            "mask_dilation": s.mask_dilation, "mask_feather": s.mask_feather,
            "openness_gain": s.openness_gain, "audio_offset_ms": s.audio_offset_ms,
            "target": None if s.target is None else [s.target.x, s.target.y, s.target.time]}


def _range_settings(d: dict[str, Any]) -> RangeSettings:
    base = RangeSettings()
    target = d.get("target")
    return RangeSettings(
        backend=str(d.get("backend", base.backend)),
        stabilizer=str(d.get("stabilizer", base.stabilizer)),
        restorer=str(d.get("restorer", base.restorer)),
        restorer_strength=float(d.get("restorer_strength", base.restorer_strength)),
        mask_kind=str(d.get("mask_kind", base.mask_kind)),
        mask_dilation=float(d.get("mask_dilation", base.mask_dilation)),
        mask_feather=float(d.get("mask_feather", base.mask_feather)),
        openness_gain=float(d.get("openness_gain", base.openness_gain)),
        audio_offset_ms=float(d.get("audio_offset_ms", base.audio_offset_ms)),
        target=None if target is None else Target(*(float(v) for v in target)),
    )


def _files_by_name(folders: Sequence[str | os.PathLike], names: set[str]) -> dict[str, list[str]]:
    """Files called one of ``names`` in ``folders`` and up to _SEARCH_DEPTH levels below."""
    found: dict[str, list[str]] = {}
    seen: set[str] = set()
    for folder in folders:
        root = os.path.abspath(os.fspath(folder))
        for dirpath, dirnames, filenames in os.walk(root):
            depth = os.path.relpath(dirpath, root).count(os.sep) + (dirpath != root)
            if depth >= _SEARCH_DEPTH:
                dirnames.clear()
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in names.intersection(filenames):
                path = os.path.join(dirpath, name)
                if path not in seen:
                    seen.add(path)
                    found.setdefault(name, []).append(path)
    return found
