"""Ingest: source -> store -> tarindex -> catalog.

Layers are read in worker processes (``jobs``): each worker reads a blob once, hashing it
(blob digest), decompressing it, hashing the tar (diff_id), cutting it into seekable zstd
frames for the cache and indexing its members into a Parquet file, all in one streaming pass.
Everything a worker writes is staged under the catalog's ``tmp/``. A verified layer's files are
moved into place at once (invisible: no catalog row names them yet); when every layer of an
image is in place, a worker computes the image's member fates (``catalog.members``); when all
of an archive's images are ready, the catalog writer records them in one transaction.
A layer already in the catalog is not read again; a blob digest the catalog has not seen is
verified (read, hashed, decompressed, checked against the diff_id) before it is recorded.
Ingest itself writes no SQL: the ``catalog.writer.Writer`` does.
"""
from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process  # noqa: F401 - cf.process.BrokenProcessPool, also under -j 1
import errno
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from .compression import open_decompressed
from .digest import Digest, HashingReader
from .errors import CorruptLayer, DigestMismatch, LayerdbError, NoSpace, SourceError, is_disk_full
from .model import LAYER_TYPES, Blob, Image, LayerRef
from .processes import pid_alive
from .sources import FileSegment, SourceOptions, expand, is_stream, open_source, recorded_source
from .store import LayerWriter

if TYPE_CHECKING:  # the catalog (duckdb) loads only when an ingest has something to record
    from .catalog.writer import Known, StagedLayer, Writer


@dataclass(frozen=True)
class LayerJob:
    """One layer to read. ``digest`` is the blob digest to verify (None: unknown). ``blob``
    pickles to the worker, which opens it (a file segment, or a registry stream)."""

    blob: Blob
    diff_id: Digest
    digest: Digest | None
    media_type: str
    staging: str
    source: str  # the archive path, first in every error message
    what: str


@dataclass(frozen=True)
class LayerResult:
    diff_id: Digest
    digest: Digest  # the blob digest, as computed
    compressed_size: int
    size: int
    stored_size: int
    member_count: int
    file_bytes: int
    compression: str
    store_tmp: str
    parquet_tmp: str
    index_tmp: str
    packages_tmp: str | None = None  # the layer's package rows (packages.scan_layer), if any


class _Prefetch:
    """Reads ``src`` on a thread of its own, ``chunk`` bytes at a time and at most ``depth``
    chunks ahead, handing each chunk to ``sink`` there (the store's writer) and to ``read``
    here; at the end of ``src`` it calls ``at_end`` there (draining the rest of the blob).
    So decompression, blob hashing and the store's framing overlap with the indexer. An error
    on the thread is raised again by ``read``; ``stop`` ends the thread early."""

    def __init__(self, src: Any, sink: Callable[[bytes], None], at_end: Callable[[], None],
                 chunk: int = 4 << 20, depth: int = 4) -> None:
        import queue

        self._src, self._sink, self._at_end, self._chunk = src, sink, at_end, chunk
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stopping = False
        self._left = b""
        self._done = False
        self._t = threading.Thread(target=self._run, name="layerdb-read", daemon=True)
        self._t.start()

    def _run(self) -> None:
        try:
            while not self._stopping:
                data = self._src.read(self._chunk)
                if not data:
                    self._at_end()
                    self._q.put(b"")
                    return
                self._sink(data)
                self._q.put(data)
        except BaseException as e:  # noqa: BLE001 - raised again by read() on the caller's thread
            self._q.put(e)

    def read(self, n: int = -1) -> bytes:
        if not self._left:
            if self._done:
                return b""
            item = self._q.get()
            if isinstance(item, BaseException):
                self._done = True
                raise item
            if not item:
                self._done = True
                return b""
            self._left = item
        if n < 0 or n >= len(self._left):
            data, self._left = self._left, b""
        else:
            data, self._left = self._left[:n], self._left[n:]
        return data

    def drain(self) -> None:
        """Read to the end (everything is handed to ``sink`` and ``at_end`` runs)."""
        while self.read(self._chunk):
            pass

    def stop(self) -> None:
        """End the thread (its current read finishes first); idempotent."""
        import queue

        self._stopping = True
        while self._t.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass


_DECODE_ERRORS: tuple[type[BaseException], ...] = (zlib.error, EOFError, OSError, ValueError)


def _decode_errors() -> tuple[type[BaseException], ...]:
    errs = list(_DECODE_ERRORS)
    try:
        import zstandard

        errs.append(zstandard.ZstdError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from isal import isal_zlib

        errs.append(isal_zlib.error)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def read_layer(job: LayerJob) -> LayerResult:
    """Read one layer blob: verify, store (staged) and index it. Runs in a worker process.

    One pass over the blob: it is hashed (its digest) and decompressed; the tar goes to the
    store's writer (which hashes it, the diff_id, and compresses frames on its own thread)
    and to the indexer, whose batches go to the Parquet file and layer index on another
    thread. An uncompressed blob is its tar, so the store's hash is its digest as well and
    it is not hashed twice."""
    from . import memory
    from .catalog import layerindex
    from .catalog.parquet import BackgroundWriter
    from .compression import NONE, decompressor, sniff
    from .packages.scan import Candidates, scan_layer
    from .settings import settings
    from .tarindex import SCHEMA, LayerStats, index_layer_deferred

    memory.use_system_allocator()
    writer = LayerWriter(job.staging)
    fd, parquet_tmp = tempfile.mkstemp(dir=job.staging, suffix=".parquet.tmp")
    os.close(fd)
    index_tmp = parquet_tmp[:-len(".parquet.tmp")] + ".idx.tmp"
    stats = LayerStats()
    index = layerindex.Builder(index_tmp)
    cands = Candidates() if settings().packages else None
    sink: BackgroundWriter | None = None
    ahead: _Prefetch | None = None
    kind = "layer"
    try:
        raw = job.blob.open()
        try:
            kind, head = sniff(raw)
            hashed = HashingReader(head, job.what, hashing=kind != NONE)
            stream = decompressor(kind, hashed)  # type: ignore[arg-type]
            ahead = _Prefetch(stream, writer.write, hashed.drain)
            sink = BackgroundWriter(parquet_tmp, SCHEMA, also=partial(_also, index, cands))
            bad_input: tuple[type[BaseException], ...] = (LayerdbError, *_decode_errors())
            try:
                for make in index_layer_deferred(ahead, str(job.diff_id), stats):  # type: ignore[arg-type]
                    sink.put(make)
            except bad_input as e:
                earlier = sink.error()  # a bad header in a batch before this point
                if earlier is not None and earlier is not e:
                    raise earlier from None
                raise
            sink.close()
            ahead.drain()
        finally:
            if ahead is not None:
                ahead.stop()
            raw.close()
        diff_id = writer.finish()
        digest = hashed.digest() if kind != NONE else diff_id
        _check_blob(job, hashed.bytes_read, digest)
        if diff_id != job.diff_id:
            raise DigestMismatch(f"layer {job.diff_id}: uncompressed content hashes to {diff_id}")
        index.finish()
        packages_tmp = scan_layer(parquet_tmp, writer.tmp_path, job.diff_id, job.staging, cands)
    except LayerdbError as e:
        writer.abort()
        _unlink(parquet_tmp)
        _unlink(index_tmp)
        msg = str(e)
        if not msg.startswith(job.source):
            msg = f"{job.source}: {msg}"
        raise type(e)(msg) from e
    except _decode_errors() as e:
        writer.abort()
        _unlink(parquet_tmp)
        _unlink(index_tmp)
        if is_disk_full(e):  # a write failed: not the layer's fault
            raise NoSpace(f"{job.what}: writing to {job.staging}: no space left on device") from e
        raise CorruptLayer(f"{job.what}: truncated or corrupt {kind_name(job)} data: {e}") from e
    finally:
        if sink is not None:
            try:
                sink.close()
            except BaseException:  # noqa: BLE001 - the first error is the one raised
                pass
        index.abort()  # its spill files (after finish: nothing left to remove)
        memory.release()
    return LayerResult(
        diff_id=job.diff_id, digest=digest, compressed_size=hashed.bytes_read,
        size=writer.size, stored_size=writer.stored_size, member_count=stats.members,
        file_bytes=stats.file_bytes, compression=kind, store_tmp=writer.tmp_path,
        parquet_tmp=parquet_tmp, index_tmp=index_tmp, packages_tmp=packages_tmp)


def _also(index: Any, cands: Any, batch: Any) -> None:
    """What else a layer's batches feed on the Parquet thread: its index, its package search."""
    index.add(batch)
    if cands is not None:
        cands.add(batch)


def _check_blob(job: LayerJob, size: int, digest: Digest) -> None:
    """The blob was read whole (``size`` bytes) and hashes to the digest that names it."""
    expected = job.blob.size()
    if expected >= 0 and size != expected:
        raise CorruptLayer(f"{job.what}: truncated blob")
    if job.digest is not None and digest != job.digest:
        raise DigestMismatch(f"{job.what}: digest mismatch: expected {job.digest}, got {digest}")


def verify_blob(job: LayerJob) -> LayerResult:
    """Check a blob of a layer the cache holds already: its digest, and that it unpacks to
    the layer's diff_id. Nothing is stored. Runs in a worker process."""
    import hashlib

    kind = "layer"
    try:
        raw = job.blob.open()
        try:
            hashed = HashingReader(raw, job.what)
            kind, stream = open_decompressed(hashed)  # type: ignore[arg-type]
            h = hashlib.sha256()
            size = 0
            while chunk := stream.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
            hashed.drain()
        finally:
            raw.close()
        _check_blob(job, hashed.bytes_read, hashed.digest())
        got = Digest.from_hex(h.hexdigest())
        if got != job.diff_id:
            raise DigestMismatch(f"{job.what}: the blob unpacks to {got}, not to the layer's "
                                 f"diff_id {job.diff_id}")
    except LayerdbError as e:
        msg = str(e)
        raise type(e)(msg if msg.startswith(job.source) else f"{job.source}: {msg}") from e
    except _decode_errors() as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise LayerdbError(f"{job.source}: no space left on device") from e
        raise CorruptLayer(f"{job.what}: truncated or corrupt {kind_name(job)} data: {e}") from e
    return LayerResult(
        diff_id=job.diff_id, digest=hashed.digest(), compressed_size=hashed.bytes_read,
        size=size, stored_size=0, member_count=0, file_bytes=0, compression=kind,
        store_tmp="", parquet_tmp="", index_tmp="")


def kind_name(job: LayerJob) -> str:
    return LAYER_TYPES.get(job.media_type, "layer") if job.media_type else "layer"


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


@dataclass
class ArchiveResult:
    path: str
    images: list[Image] = field(default_factory=list)
    new_images: int = 0
    new_layers: int = 0
    bytes_read: int = 0
    error: LayerdbError | None = None


@dataclass
class IngestReport:
    archives: list[ArchiveResult]
    seconds: float

    @property
    def failed(self) -> list[ArchiveResult]:
        return [a for a in self.archives if a.error is not None]


# the members that the member tables being built at once may hold between them. Building one
# takes ~200 bytes a member. Scale fleet (benchmarks/fleet_bench.py, -j 2), peak of the process
# tree: 699 MB with this budget (two 1M-member images build side by side, a 2M-member one
# alone), 617 MB with 1.5M (every 1M-member build alone, slower). Above the budget builds take
# turns; one always runs, whatever its size.
MATERIALIZE_BUDGET = 2_000_000


def _executor(jobs: int) -> cf.Executor:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["layerdb.ingest", "layerdb.tarindex", "layerdb.catalog.members",
                                "pyarrow.parquet"])
    # A fresh worker for each task (Python >= 3.11): a worker that read a layer keeps ~150 MB
    # it no longer uses (fragmented heaps), and a fork from the forkserver costs milliseconds.
    # Scale fleet, -j 2: peak 946 -> 617 MB for the process tree. (Only 1: CPython's
    # gh-115634 deadlock needs max_tasks_per_child > 1.)
    recycle: dict[str, Any] = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_exit_with,
                                  initargs=(os.getpid(),), **recycle)


def _exit_with(pid: int) -> None:
    """Worker initializer: exit when the ingesting process is gone. A pool worker otherwise
    outlives a ``kill -9`` of its parent forever (it holds both ends of its own task pipe, and
    the forkserver lives as long as any worker does)."""

    def watch() -> None:
        while pid_alive(pid):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="layerdb-parent-watch", daemon=True).start()


class _InlineExecutor(cf.Executor):
    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - handed to the caller via the future
            f.set_exception(e)
        return f


@dataclass
class _Plan:
    """One archive on its way in: its images, the layer reads and blob checks it waits for,
    then the member tables of its new images."""

    res: ArchiveResult
    src: Any
    images: list[Image]
    waits: dict[str, cf.Future] = field(default_factory=dict)  # diff_id or digest -> job
    refs: dict[str, LayerRef] = field(default_factory=dict)  # same keys -> this archive's copy
    builds: dict[str, cf.Future] = field(default_factory=dict)  # image id -> materialize
    done: bool = False


def ingest(paths: Iterable[str], catalog_root: str | None = None, jobs: int | None = None,
           progress: Callable[[dict], None] | None = None, verify: bool = False,
           wait: float = 600.0, options: SourceOptions | None = None) -> IngestReport:
    """Ingest every archive or layout in ``paths``. Each archive is all-or-nothing: on any
    error nothing of it is recorded, and the error is kept in its ``ArchiveResult`` (the
    others still go in). All archives' new layers are read in one pool, each distinct diff_id
    once; an archive is recorded as soon as its images are ready. ``verify``: read and check
    every blob, even of layers the cache holds. ``wait``: seconds to wait for another writer.
    ``progress`` receives event dicts (for a progress bar). ``options`` says how to open
    sources (registry settings; ``--all-tags`` expands a reference into one archive per tag)."""
    from .catalog.layout import Layout

    t0 = time.monotonic()
    emit = progress or (lambda ev: None)
    layout = Layout.at(catalog_root)
    os.makedirs(layout.tmp_dir, exist_ok=True)
    _clean_stale(layout.tmp_dir)  # what killed ingests left behind
    run_tmp = tempfile.mkdtemp(dir=layout.tmp_dir, prefix=f"ingest-{os.getpid()}-")
    results: list[ArchiveResult] = []
    plans: list[_Plan] = []
    executor: cf.Executor | None = None
    try:
        # every archive is opened (and a compressed one decompressed) once, here
        paths = list(paths)
        opts = options or SourceOptions()
        if any(is_stream(p) for p in paths):  # members the cache holds are not spooled
            opts = replace(opts, cached_blobs=lambda: _cached_blobs(layout))
        for path, err in expand(paths, opts):
            res = ArchiveResult(path)
            results.append(res)
            try:
                if err is not None:
                    raise err
                plans.append(_open_plan(res, run_tmp, opts))
            except LayerdbError as e:
                res.error = e
                emit({"event": "error", "path": path, "error": str(e)})
        if not plans or (not verify and _all_known(plans, layout)):
            return IngestReport(results, time.monotonic() - t0)
        from .catalog.writer import Writer

        with Writer.open(layout.root, wait=wait,
                         on_wait=lambda msg: emit({"event": "wait", "message": msg})) as w:
            jobs = jobs or os.cpu_count() or 1
            executor = _InlineExecutor() if jobs <= 1 else _executor(jobs)
            _Run(plans, w, run_tmp, executor, emit, verify).go()
    finally:
        for plan in plans:
            plan.src.close()
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(run_tmp, ignore_errors=True)
    return IngestReport(results, time.monotonic() - t0)


def _all_known(plans: list[_Plan], layout: Any) -> bool:
    """A re-ingest's shortcut: when the catalog's lookup index (valid for the database as it
    is now) already holds every image of every archive, with its refs and blob digests, there
    is nothing to do, and the catalog (duckdb) is not even opened."""
    from .catalog.lookupindex import LookupIndex

    idx = LookupIndex.open(layout)
    if idx is None:
        return False
    try:
        refs, blobs = idx.known()
    finally:
        idx.close()
    from .selection import new_refs

    for img in (i for p in plans for i in p.images):
        if str(img.id) not in refs or new_refs(img.refs, refs[str(img.id)]) != ([], []):
            return False
        if any(l.digest is not None and str(l.digest) not in blobs for l in img.layers):
            return False
    return True


def _cached_blobs(layout: Any) -> frozenset[str]:
    """Blob digests whose layers the catalog holds (from its lookup index; empty if none)."""
    from .catalog.layout import Layout
    from .catalog.lookupindex import LookupIndex

    idx = LookupIndex.open(Layout.at(layout) if isinstance(layout, str) else layout)
    if idx is None:
        return frozenset()
    try:
        return frozenset(idx.known()[1])
    finally:
        idx.close()


def _open_plan(res: ArchiveResult, run_tmp: str, options: SourceOptions | None = None) -> _Plan:
    path = res.path
    staging = tempfile.mkdtemp(dir=run_tmp)
    try:
        src = open_source(path, staging, options)
    except OSError as e:
        raise SourceError(f"{path}: {e.strerror or e}") from e
    try:
        images = list(src.images())
        if not images:
            raise SourceError(f"{path}: no image found")
    except BaseException:
        src.close()
        raise
    res.images = images
    return _Plan(res, src, images)


class _Run:
    """The pool's work for one ingest: layer reads and blob checks, then member tables, then
    the commits, each as soon as what it needs is ready."""

    def __init__(self, plans: list[_Plan], w: Writer, run_tmp: str, executor: cf.Executor,
                 emit: Callable[[dict], None], verify: bool) -> None:
        self.plans = plans
        self.w = w
        self.executor = executor
        self.emit = emit
        self.verify = verify
        self.staging = tempfile.mkdtemp(dir=run_tmp)
        self.known: Known = w.known([i for p in plans for i in p.images])
        self.reads: dict[str, cf.Future] = {}  # diff_id -> the read the plans share
        self.checks: dict[str, cf.Future] = {}  # blob digest -> the check the plans share
        self.builds: dict[str, cf.Future] = {}  # image id -> its member table
        self.owner: dict[cf.Future, LayerRef] = {}
        self.staged: dict[str, StagedLayer] = {}  # placed this run
        self.results: dict[str, LayerResult] = {}  # diff_id -> read
        self.pending: set[cf.Future] = set()
        # member tables wait their turn so that those being built hold at most
        # MATERIALIZE_BUDGET members between them (their memory is ~200 bytes a member)
        self.build_queue: list[tuple[int, Any, cf.Future]] = []  # (members, job, placeholder)
        self.building: dict[cf.Future, tuple[int, cf.Future]] = {}  # pool future -> (members, placeholder)
        self.build_load = 0

    def _submit(self, fn: Callable[[LayerJob], LayerResult], path: str, l: LayerRef) -> cf.Future:
        job = LayerJob(l.blob, l.diff_id, l.digest, l.media_type, self.staging, path,
                       f"{path}: layer {l.diff_id}")
        fut = self.executor.submit(fn, job)
        self.owner[fut] = l
        self.pending.add(fut)
        return fut

    def go(self) -> None:
        for plan in self.plans:
            self._start(plan)
        for plan in self.plans:
            self._advance(plan)
        while self.pending:
            finished, self.pending = cf.wait(self.pending, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                self._landed(fut)
            for plan in self.plans:
                self._advance(plan)

    def _start(self, plan: _Plan) -> None:
        path = plan.res.path
        todo_bytes = 0
        for img in plan.images:
            for l in img.layers:
                d = str(l.diff_id)
                if d in self.known.layers:
                    # cached: never read again; a blob digest not yet verified is checked
                    # before it is recorded (and every blob with --verify)
                    if l.digest is None or (str(l.digest) in self.known.blobs and not self.verify):
                        continue
                    if not self.verify and not isinstance(l.blob, FileSegment):
                        continue  # a network blob of a cached layer is not fetched (nor recorded)
                    key = str(l.digest)
                    if key not in plan.waits:
                        if key not in self.checks:
                            self.checks[key] = self._submit(verify_blob, path, l)
                        plan.waits[key] = self.checks[key]
                        plan.refs[key] = l
                        todo_bytes += l.blob.size()
                    continue
                if d not in plan.waits:
                    if d not in self.reads:
                        self.reads[d] = self._submit(read_layer, path, l)
                    plan.waits[d] = self.reads[d]
                    plan.refs[d] = l
                    todo_bytes += l.blob.size()
        self.emit({"event": "archive", "path": path, "layers": len(plan.waits), "bytes": todo_bytes})

    def _members(self, img: Image) -> int:
        """How many members the image's layers hold (read this run, or from the catalog)."""
        from .catalog import layerindex

        n = 0
        for l in img.layers:
            r = self.results.get(str(l.diff_id))
            if r is not None:
                n += r.member_count
                continue
            try:
                n += layerindex.count(self.w.layout.layer_index(l.diff_id))
            except (OSError, ValueError):  # a damaged index: building will say so
                pass
        return n

    def _pump_builds(self) -> None:
        """Start the waiting member tables that fit the budget (one always may)."""
        from .catalog.members import materialize

        while self.build_queue:
            weight, job, placeholder = self.build_queue[0]
            if placeholder.cancelled():
                self.build_queue.pop(0)
                continue
            if self.building and self.build_load + weight > MATERIALIZE_BUDGET:
                return
            self.build_queue.pop(0)
            fut = self.executor.submit(materialize, job)
            self.building[fut] = (weight, placeholder)
            self.build_load += weight
            self.pending.add(fut)

    def _built(self, fut: cf.Future) -> None:
        weight, placeholder = self.building.pop(fut)
        self.build_load -= weight
        if not placeholder.done():
            if fut.cancelled():
                placeholder.cancel()
            elif fut.exception() is not None:
                placeholder.set_exception(fut.exception())
            else:
                placeholder.set_result(fut.result())
        self._pump_builds()

    def _landed(self, fut: cf.Future) -> None:
        if fut in self.building:
            self._built(fut)
            return
        if fut in self.owner and not fut.cancelled() and fut.exception() is None:
            r: LayerResult = fut.result()
            d = str(r.diff_id)
            if r.store_tmp and d not in self.staged:  # a read (not a check): place it now
                from .catalog.writer import StagedLayer

                s = StagedLayer(r.diff_id, r.size, r.compressed_size, r.stored_size,
                                r.member_count, r.file_bytes, r.store_tmp, r.parquet_tmp,
                                r.index_tmp, r.packages_tmp)
                try:
                    self.w.place_layer(s)
                except OSError as e:
                    self._fail_layer(d, LayerdbError(f"placing layer {d}: {e.strerror or e}"))
                    return
                self.staged[d] = s
                self.results[d] = r
        for plan in self.plans:
            if plan.done:
                continue
            for key, f in list(plan.waits.items()):
                if f is not fut:
                    continue
                self.emit({"event": "layer", "path": plan.res.path, "bytes": plan.refs[key].blob.size()})
                failed = fut.cancelled() or fut.exception() is not None
                if failed and fut in self.owner and plan.refs[key] is not self.owner[fut]:
                    # another archive's copy failed; this archive reads its own
                    fn = verify_blob if key in self.checks else read_layer
                    plan.waits[key] = self._submit(fn, plan.res.path, plan.refs[key])

    def _fail_layer(self, d: str, err: LayerdbError) -> None:
        for plan in self.plans:
            if not plan.done and d in plan.waits:
                self._fail(plan, err)

    def _fail(self, plan: _Plan, err: BaseException | None) -> None:
        plan.done = True
        plan.res.error = _as_error(plan.res.path, err)
        self.emit({"event": "error", "path": plan.res.path, "error": str(plan.res.error)})
        live = {f for q in self.plans if not q.done for f in (*q.waits.values(), *q.builds.values())}
        for f in (*plan.waits.values(), *plan.builds.values()):
            if f not in live:
                f.cancel()

    def _advance(self, plan: _Plan) -> None:
        if plan.done:
            return
        jobs = list(plan.waits.values()) + list(plan.builds.values())
        failed = [f for f in jobs if f.done() and (f.cancelled() or f.exception() is not None)]
        if failed:
            self._fail(plan, None if failed[0].cancelled() else failed[0].exception())
            return
        if not all(f.done() for f in plan.waits.values()):
            return
        if not plan.waits and self.known.nothing_new(plan.images):
            plan.done = True  # a re-ingest: every image, blob and ref is recorded already
            return
        if any(str(l.diff_id) not in self.staged and str(l.diff_id) not in self.known.layers
               for i in plan.images for l in i.layers):
            return  # a layer's placement failed: _fail_layer has said so
        # every layer is in place: build the member table of each new image
        for img in plan.images:
            i = str(img.id)
            if i in self.known.images or i in plan.builds:
                continue
            if i not in self.builds:
                from .catalog.members import MaterializeJob

                lay = self.w.layout
                job = MaterializeJob(
                    i, tuple((p, str(l.diff_id), lay.files(l.diff_id)) for p, l in enumerate(img.layers)),
                    os.path.join(self.staging, img.id.hex + ".members.parquet"),
                    os.path.join(self.staging, img.id.hex + ".fate"))
                placeholder: cf.Future = cf.Future()
                self.build_queue.append((self._members(img), job, placeholder))
                self.builds[i] = placeholder
                self._pump_builds()
            plan.builds[i] = self.builds[i]
        if all(f.done() for f in plan.builds.values()):
            self._record(plan)

    def _record(self, plan: _Plan) -> None:
        from .catalog import BlobRecord
        from .catalog.writer import StagedArchive, StagedImage

        plan.done = True
        reads = {d: r for d, r in self.results.items()}
        checks = {k: f.result() for k, f in plan.waits.items() if k in self.checks}
        images = [_with_blob_digests(i, reads) for i in plan.images]
        staged: list[StagedImage] = []
        for img in images:
            i = str(img.id)
            if i in self.known.images:
                staged.append(StagedImage(img))
                continue
            b = plan.builds[i].result()
            job_members = os.path.join(self.staging, img.id.hex + ".members.parquet")
            job_fate = os.path.join(self.staging, img.id.hex + ".fate")
            first = os.path.exists(job_members)  # an image in two archives: recorded once
            staged.append(StagedImage(img, job_members if first else None,
                                      job_fate if first else None, b.members, b.visible))
        blobs: dict[str, BlobRecord] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for img in images:
            for l in img.layers:
                d = str(l.diff_id)
                got = reads.get(d) if d in plan.waits else None
                checked = checks.get(str(l.digest)) if l.digest is not None else None
                if got is not None:
                    sizes[d] = (got.compressed_size, got.size)
                verified = got or checked
                if verified is None:
                    continue  # a cached layer whose blob was recorded already (or has no digest)
                digest = l.digest or verified.digest
                if str(digest) in self.known.blobs:
                    continue
                size = l.size if l.size >= 0 else verified.compressed_size
                blobs[str(digest)] = BlobRecord(digest, l.diff_id, l.media_type, size)
        new = [self.staged[d] for d in plan.waits if d in self.staged]
        archive = StagedArchive(recorded_source(plan.res.path, images), staged, list(blobs.values()), sizes)
        try:
            moves = self.w.record(archive, new)
        except LayerdbError as e:
            plan.res.error = e
            self.emit({"event": "error", "path": plan.res.path, "error": str(e)})
            return
        res = plan.res
        retags = [m for m in moves if not m.renamed_to]
        for ref, to in dict.fromkeys((m.ref, m.new_id) for m in retags):  # a retag: one line each
            self.emit({"event": "moved", "path": res.path, "ref": ref, "to": to,
                       "from": [m.old_id for m in retags if (m.ref, m.new_id) == (ref, to)]})
        for m in moves:
            if m.renamed_to:  # an older catalog's bare tag, now written in full
                self.emit({"event": "renamed", "path": res.path, "ref": m.ref, "image": m.new_id,
                           "to": m.renamed_to})
        res.new_images = len({str(i.id) for i in images} - self.known.images)
        fresh = [s for s in new if str(s.diff_id) not in self.known.layers]
        res.new_layers = len(fresh)
        res.bytes_read = sum(s.compressed_size for s in fresh)
        self.known.images.update(str(i.id) for i in images)
        self.known.layers.update(str(s.diff_id) for s in new)
        self.known.blobs.update(blobs)


def _as_error(path: str, e: BaseException | None) -> LayerdbError:
    if isinstance(e, LayerdbError):
        return e
    if isinstance(e, cf.process.BrokenProcessPool):
        return LayerdbError(f"{path}: a worker process died")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return LayerdbError(f"{path}: no space left on device")
    return LayerdbError(f"{path}: {e or 'cancelled'}")


def _with_blob_digests(img: Image, done: dict[str, LayerResult]) -> Image:
    """Fill in blob digests the source did not state (docker save's legacy layer.tar) from
    what the workers computed."""
    if all(l.digest is not None or str(l.diff_id) not in done for l in img.layers):
        return img
    layers = tuple(l if l.digest is not None or str(l.diff_id) not in done
                   else replace(l, digest=done[str(l.diff_id)].digest) for l in img.layers)
    return replace(img, layers=layers)


def _clean_stale(tmp_dir: str) -> None:
    """Remove staging dirs of ingests whose process is gone (killed mid-way)."""
    try:
        entries = os.listdir(tmp_dir)
    except FileNotFoundError:
        return
    for name in entries:
        if not name.startswith("ingest-"):
            continue
        try:
            pid = int(name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(os.path.join(tmp_dir, name), ignore_errors=True)
