"""Host-to-device streaming on the CUDA backend: the copy pipeline, memory budget and streamed passes.

Scope: ``fastsoftmax.backends.cuda``'s ``_HostToDevicePipeline`` (pinned, double-buffered
copies overlapped with compute), ``CudaBackend.stream``, and the memory arithmetic that
decides what streams and in which pieces (``_free_bytes`` under a CuPy pool limit,
``_capacity_bytes``, ``resident``, ``max_chunk_rows``).

The pipeline's ordering is tested without a GPU, on a fake device whose streams run
only when the test lets them: a schedule that runs the copy stream ahead of the
compute stream, or the compute stream ahead of the copies, or neither until the host
waits, makes any missing event show up as wrong data (the tests check that each
event the pipeline records is needed, by dropping it).  The memory arithmetic runs
under Numba's CUDA simulator, with a fake CuPy pool where a GPU's numbers matter.
The ``gpu`` tests at the end run streamed passes on a real device against resident
ones.  CSR on the CUDA backend is tested in ``test_sparse.py``.
"""

import gc
import time
from collections import deque
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

from fastsoftmax import SoftmaxObjective, get_backend
from fastsoftmax.backends import cuda_unavailable_reason
from fastsoftmax.backends.cuda import _HostToDevicePipeline
from tests.reference import make_problem, max_rel_err, rtol_for

needs_cuda = pytest.mark.skipif(cuda_unavailable_reason() is not None, reason=cuda_unavailable_reason() or "")


# -- a fake device ----------------------------------------------------------------------
class FakeEvent:
    """A CUDA event: ``queued`` records were enqueued, ``reached`` of them have executed."""

    def __init__(self, device):
        self.device = device
        self.queued = 0
        self.reached = 0

    def synchronize(self):
        if not self.device.skip_host_waits:
            self.device.run_until(lambda: self.reached >= self.queued)


class FakeStream:
    """A CUDA stream: operations run in order, and only when the device runs them."""

    def __init__(self, device, name):
        self.device = device
        self.name = name
        self.ops = deque()  # callables that return False while blocked (waits), True once done

    def enqueue(self, op):
        self.ops.append(op)
        self.device.progress()

    def work(self, fn):
        self.enqueue(lambda: fn() or True)

    def record(self, event=None):
        event = event or FakeEvent(self.device)
        event.queued += 1
        target = event.queued

        def reach():
            event.reached = target
            return True

        self.enqueue(reach)
        return event

    def wait_event(self, event):
        if self.name in self.device.skip_stream_waits:
            return
        # CUDA semantics: wait for the record queued before this call, not later ones.
        target = event.queued
        self.enqueue(lambda: event.reached >= target)

    def step(self):
        if self.ops and self.ops[0]():
            self.ops.popleft()
            return True
        return False


class FakeDevice:
    """Stands in for ``cupy.cuda`` and for the memory calls of the pipeline.

    Streams named in ``eager`` run as far as they can after every call; the others
    run only when the host waits on an event, or at :meth:`drain`.  Device memory
    starts as 0xEE bytes and pinned memory as 0xDD, so data that was never copied
    cannot pass for the right data.

    Parameters
    ----------
    eager : set of {"copy", "compute"}
    skip_stream_waits : set of {"copy", "compute"}
        Streams whose ``wait_event`` does nothing: the pipeline as if it forgot it.
    skip_host_waits : bool
        ``Event.synchronize`` returns at once.
    """

    def __init__(self, eager=(), skip_stream_waits=(), skip_host_waits=False):
        self.eager = set(eager)
        self.skip_stream_waits = set(skip_stream_waits)
        self.skip_host_waits = skip_host_waits
        self.compute = FakeStream(self, "compute")
        self.copy = None
        self.copies_queued = 0
        self.copies_done = 0
        self.pinned_allocations = []
        self.page_locked = []  # host arrays whose memory counts as pinned

    # cupy.cuda's part
    def Stream(self, non_blocking=False):
        assert non_blocking, "a blocking copy stream would serialise with the legacy default stream"
        self.copy = FakeStream(self, "copy")
        return self.copy

    def get_current_stream(self):
        return self.compute

    # the pipeline's memory calls
    def empty_device(self, nbytes):
        return np.full(nbytes, 0xEE, np.uint8)

    def empty_pinned(self, nbytes):
        self.pinned_allocations.append(nbytes)
        return np.full(nbytes, 0xDD, np.uint8)

    def is_pinned(self, a):
        return any(np.shares_memory(a, locked) for locked in self.page_locked)

    def copy_async(self, dst, src, stream):
        assert stream is self.copy
        self.copies_queued += 1

        def copy():
            np.copyto(dst, src)  # reads the pinned buffer now, as the copy engine would
            self.copies_done += 1

        stream.work(copy)

    # running
    def _streams(self):
        return [s for s in (self.copy, self.compute) if s is not None]

    def progress(self):
        moved = True
        while moved:
            moved = False
            for stream in self._streams():
                while stream.name in self.eager and stream.step():
                    moved = True

    def run_until(self, done):
        while not done():
            # One operation at a time, eager streams first: as little as the wait needs.
            order = sorted(self._streams(), key=lambda s: s.name not in self.eager)
            if not any(stream.step() for stream in order):
                raise AssertionError("deadlock: every stream waits on an event that never comes")
            self.progress()

    def drain(self):
        self.run_until(lambda: not any(s.ops for s in self._streams()))


def make_pipeline(device, n_threads=2):
    return _HostToDevicePipeline(
        device,
        empty_device=device.empty_device,
        empty_pinned=device.empty_pinned,
        copy_async=device.copy_async,
        is_pinned=device.is_pinned,
        n_threads=n_threads,
    )


def host_pieces(sizes, n_features=5, seed=0):
    """``(lo, hi, X)`` pieces of float32 rows, each piece's values distinct from every other's."""
    rng = np.random.default_rng(seed)
    pieces, lo = [], 0
    for n in sizes:
        pieces.append((lo, lo + n, rng.standard_normal((n, n_features)).astype(np.float32)))
        lo += n
    return pieces


def consume(device, pipeline, pieces, to_device=None):
    """Run a pass: for each piece, queue on the compute stream a "kernel" that snapshots it.

    Returns the snapshots (what the compute saw) and, for each piece, the number of
    copies queued when it was handed out.
    """
    seen, queued_at_hand_out = [], []
    for lo, hi, X in pipeline.stream(pieces, to_device or (lambda X: X)):
        queued_at_hand_out.append(device.copies_queued)
        snapshot = {"range": (lo, hi)}
        seen.append(snapshot)
        device.compute.work(lambda X=X, snapshot=snapshot: snapshot.update(X=np.array(X)))
    device.drain()
    return seen, queued_at_hand_out


SCHEDULES = {
    "copies ahead": {"copy"},
    "compute ahead": {"compute"},
    "only when waited for": set(),
    "both eager": {"copy", "compute"},
}


# -- the pipeline's ordering --------------------------------------------------------------
@pytest.mark.parametrize("eager", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_every_schedule_the_events_allow_computes_on_the_right_data(eager):
    device = FakeDevice(eager)
    pieces = host_pieces([7, 7, 7, 7, 3])
    seen, _ = consume(device, make_pipeline(device), pieces)
    assert [s["range"] for s in seen] == [(lo, hi) for lo, hi, _ in pieces]
    for snapshot, (_, _, X) in zip(seen, pieces):
        np.testing.assert_array_equal(snapshot["X"], X)
    assert device.copies_done == len(pieces)


@pytest.mark.parametrize(
    "rule, device",
    [
        ("(a) compute waits for the copy", FakeDevice({"compute"}, skip_stream_waits={"compute"})),
        ("(b) copy waits for the compute on the buffer", FakeDevice({"copy"}, skip_stream_waits={"copy"})),
        ("(c) host waits for the copy before refilling", FakeDevice(set(), skip_host_waits=True)),
    ],
    ids=["a", "b", "c"],
)
def test_each_ordering_rule_is_needed(rule, device):
    pieces = host_pieces([4, 4, 4, 4])
    seen, _ = consume(device, make_pipeline(device), pieces)
    wrong = [not np.array_equal(s["X"], X) for s, (_, _, X) in zip(seen, pieces)]
    assert any(wrong), f"without {rule} the fake device should have produced wrong data"


def test_next_copy_is_queued_before_the_compute_on_this_piece():
    device = FakeDevice()
    pieces = host_pieces([3] * 5)
    _, queued_at_hand_out = consume(device, make_pipeline(device), pieces)
    # Piece k is handed out with the copy of piece k + 1 already queued: the copy engine
    # works on it while the caller's kernels run on piece k.
    assert queued_at_hand_out == [2, 3, 4, 5, 5]


def test_pinned_buffers_are_kept_between_passes_and_grow_for_bigger_pieces():
    device = FakeDevice({"copy", "compute"})
    pipeline = make_pipeline(device)
    piece_bytes = 6 * 5 * 4
    for _ in range(3):  # three passes, as an optimiser makes them
        consume(device, pipeline, host_pieces([6, 6, 6, 2]))
    assert device.pinned_allocations == [piece_bytes, piece_bytes]
    seen, _ = consume(device, pipeline, host_pieces([9, 9, 9], seed=1))
    assert device.pinned_allocations == [piece_bytes, piece_bytes, 9 * 5 * 4, 9 * 5 * 4]
    np.testing.assert_array_equal(seen[2]["X"], host_pieces([9, 9, 9], seed=1)[2][2])


@pytest.mark.parametrize("eager", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_pinned_pieces_are_copied_in_place(eager):
    device = FakeDevice(eager)
    X = np.random.default_rng(3).standard_normal((26, 5)).astype(np.float32)
    device.page_locked.append(X)
    pieces = [(lo, min(lo + 7, 26), X[lo : lo + 7]) for lo in range(0, 26, 7)]
    seen, _ = consume(device, make_pipeline(device), pieces)
    for snapshot, (_, _, piece) in zip(seen, pieces):
        np.testing.assert_array_equal(snapshot["X"], piece)
    assert device.copies_done == 4 and device.pinned_allocations == []


def test_pieces_that_are_not_host_arrays_go_through_to_device_in_order():
    device = FakeDevice({"copy"})
    dense = host_pieces([4, 4])
    on_device = object()
    pieces = [dense[0], (4, 6, on_device), (6, 8, sp.csr_matrix(np.eye(2, 5))), (8, 12, dense[1][2])]
    converted = []

    def to_device(X):
        converted.append(X)
        return X

    seen, _ = consume(device, make_pipeline(device), pieces, to_device)
    assert [s["range"] for s in seen] == [(0, 4), (4, 6), (6, 8), (8, 12)]
    assert converted == [on_device, pieces[2][2]]
    np.testing.assert_array_equal(seen[3]["X"], dense[1][2])
    assert device.copies_queued == 2


def test_closing_a_pass_early_orders_later_compute_after_the_copy_in_flight():
    device = FakeDevice({"compute"})
    pass_ = make_pipeline(device).stream(host_pieces([4, 4, 4]), lambda X: X)
    next(pass_)  # piece 0 handed out, piece 1's copy queued and not yet run
    pass_.close()
    ran_after = []
    device.compute.work(lambda: ran_after.append(device.copies_done))
    device.drain()
    # Whatever the pool gives piece 1's device buffer to next is written after the copy.
    assert ran_after == [2]


def test_large_pieces_are_staged_by_several_threads():
    device = FakeDevice({"copy", "compute"})
    X = np.random.default_rng(2).standard_normal((1100, 4000)).astype(np.float32)[:, ::2]  # 8.8 MB, strided
    pipeline = make_pipeline(device, n_threads=4)
    seen, _ = consume(device, pipeline, [(0, 1100, X)])
    np.testing.assert_array_equal(seen[0]["X"], X)
    assert pipeline._threads is not None


# -- what streams, and in which pieces ---------------------------------------------------------
class FakePool:
    """CuPy's memory pool, as far as ``_free_bytes`` reads it."""

    def __init__(self, limit, used, cached):
        self.limit, self.used, self.cached = limit, used, cached

    def get_limit(self):
        return self.limit

    def used_bytes(self):
        return self.used

    def free_bytes(self):
        return self.cached


class FakeRuntimeError(Exception):
    """``cupy.cuda.runtime.CUDARuntimeError``."""


class FakeRuntime:
    """The CUDA runtime calls of the backend's memory logic: free memory and page locking."""

    CUDARuntimeError = FakeRuntimeError

    def __init__(self, free, total):
        self.free, self.total = free, total
        self.locked = {}  # address: bytes
        self.refuse = False

    def memGetInfo(self):
        return self.free, self.total

    def hostRegister(self, ptr, size, flags):
        if self.refuse:
            raise FakeRuntimeError("cudaErrorHostMemoryAlreadyRegistered")
        self.locked[ptr] = size

    def hostUnregister(self, ptr):
        del self.locked[ptr]

    def is_memory_pinned(self, ptr):
        return any(start <= ptr < start + size for start, size in self.locked.items())


class DeviceCSR(sp.csr_matrix):
    """What the fake GPU's ``cupyx.scipy.sparse.csr_matrix`` makes: a CSR matrix that is on the device."""


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu(free, limit=0, used=0, cached=0, total=80 GiB, deterministic=False)``: a CUDA backend.

    It sees a GPU with that memory, and sizes by its free memory unless ``deterministic``.
    CuPy's memory calls (``backend.xp.cuda.runtime`` is a :class:`FakeRuntime`) and
    its CSR type are faked; nothing else of CuPy is used by the methods under test.
    """
    from fastsoftmax.backends.cuda import CudaBackend

    backend = CudaBackend()

    def with_memory(free, limit=0, used=0, cached=0, total=80 << 30, deterministic=False):
        pool = FakePool(limit, used, cached)
        runtime = FakeRuntime(free, total)
        cuda = SimpleNamespace(
            runtime=runtime, pinned_memory=SimpleNamespace(is_memory_pinned=runtime.is_memory_pinned)
        )
        xp = SimpleNamespace(get_default_memory_pool=lambda: pool, cuda=cuda)
        device_sparse = SimpleNamespace(issparse=lambda a: isinstance(a, DeviceCSR), csr_matrix=DeviceCSR)
        monkeypatch.setattr(backend, "simulated", False)
        monkeypatch.setattr(backend, "xp", xp)
        monkeypatch.setattr(backend, "_sparse", device_sparse)
        monkeypatch.setattr(backend, "deterministic", deterministic)
        return backend

    return with_memory


@pytest.mark.cuda
@needs_cuda
def test_free_memory_honours_the_pool_limit(fake_gpu):
    assert fake_gpu(free=1000, cached=200)._free_bytes() == 1200
    assert fake_gpu(free=1000, limit=700, used=300, cached=200)._free_bytes() == 400
    assert fake_gpu(free=100, limit=700, used=300, cached=200)._free_bytes() == 300
    assert fake_gpu(free=1000, limit=700, used=900)._free_bytes() == 0


@pytest.mark.cuda
@needs_cuda
def test_deterministic_budget_is_the_capacity_within_the_pool_limit(fake_gpu):
    X = np.ones((1000, 8), np.float32)  # 32,000 bytes, on the host
    # A row takes 84 bytes: 3 float32 logits, a float64 row loss, and the row in two
    # device buffers.  0.5 * (1 - 0.6) of 100,000 bytes holds 238 rows: 128, rounded
    # down to a power of two, however much memory is free.
    for free in (1000, 50_000, 100_000):
        backend = fake_gpu(free=free, total=100_000, deterministic=True)
        assert backend._capacity_bytes() == 100_000
        assert backend.max_chunk_rows(X, 3) == 128
    # The pool's limit is a setting, not a state, so it counts: 0.2 * 50,000 // 84 = 119 -> 64.
    backend = fake_gpu(free=100_000, total=100_000, limit=50_000, used=40_000, deterministic=True)
    assert backend._capacity_bytes() == 50_000 and backend.max_chunk_rows(X, 3) == 64
    # 32,000 bytes over 0.6 of the capacity: X stays on the host.
    assert isinstance(backend.resident(X), np.ndarray)


@pytest.mark.cuda
@needs_cuda
def test_data_over_the_limited_budget_stays_on_the_host_and_streams_in_double_buffered_pieces(
    fake_gpu, monkeypatch
):
    X = np.ones((1000, 8), np.float32)  # 32,000 bytes
    backend = fake_gpu(free=80 << 30, limit=60_000, used=10_000)
    # 32,000 bytes against 0.6 * 50,000 of budget: it stays on the host.
    on_host = backend.resident(X)
    assert isinstance(on_host, np.ndarray) and np.shares_memory(on_host, X)
    # Per row: 3 float32 logits, a float64 row loss, and the row in two device buffers.
    per_row = 3 * 4 + 8 + 2 * 8 * 4
    assert backend.max_chunk_rows(X, 3) == int(0.5 * 50_000) // per_row
    monkeypatch.setattr("fastsoftmax.backends.cuda.STREAM_PIECE_BYTES", 10 * 8 * 4)
    assert backend.max_chunk_rows(X, 3) == 10


@pytest.mark.cuda
@needs_cuda
def test_host_resident_X_is_page_locked_while_the_objective_holds_it(fake_gpu, monkeypatch):
    X = np.ones((1000, 8), np.float32)
    backend = fake_gpu(free=80 << 30, limit=30_000)
    runtime = backend.xp.cuda.runtime
    on_host = backend.resident(X)
    assert runtime.locked == {X.ctypes.data: X.nbytes}
    # Already pinned (here: by the first objective, still alive): left as it is.
    assert backend.resident(X) is X and runtime.locked == {X.ctypes.data: X.nbytes}
    del on_host
    gc.collect()
    assert runtime.locked == {}
    # The driver refuses, or X is too large to lock: X streams through staging.
    runtime.refuse = True
    assert backend.resident(X) is X and runtime.locked == {}
    runtime.refuse = False
    monkeypatch.setattr("fastsoftmax.backends.cuda.LOCK_FRACTION", 1e-9)
    assert backend.resident(X) is X and runtime.locked == {}


@pytest.mark.cuda
@needs_cuda
def test_csr_is_budgeted_by_its_stored_values(fake_gpu):
    X = sp.random(1000, 50, density=0.1, format="csr", dtype=np.float32, random_state=0)
    backend = fake_gpu(free=100_000)
    # Per row: logits twice (SpMM's column-major ones and their reordered copy), the
    # row loss, and two converted pieces (the one computed on and the next): 5 stored
    # values and their indices, and a row pointer, each.
    per_row = 2 * 3 * 4 + 8 + 2 * ((4 + 4) * X.nnz / 1000 + 4)
    assert backend.max_chunk_rows(X, 3) == 50_000 // int(np.ceil(per_row))
    on_device = fake_gpu(free=100_000_000).resident(X)
    assert isinstance(on_device, DeviceCSR) and on_device.has_canonical_format
    # On the device, no piece is converted.
    assert backend.max_chunk_rows(on_device, 3) == int(0.5 * 100_000_000) // (2 * 3 * 4 + 8)


@pytest.mark.cuda
@needs_cuda
def test_stream_yields_every_piece_on_the_backend():
    backend = get_backend("cuda")
    dense = np.arange(12.0).reshape(4, 3)
    csr = sp.csr_matrix(np.eye(3))
    out = list(backend.stream([(0, 4, dense), (4, 7, csr)]))
    assert [(lo, hi) for lo, hi, _ in out] == [(0, 4), (4, 7)]
    np.testing.assert_array_equal(backend.to_host(out[0][2]), dense)
    assert backend._is_sparse(out[1][2])
    np.testing.assert_array_equal(backend.to_host(out[1][2].toarray()), np.eye(3))


# -- real GPU ---------------------------------------------------------------------------------
@pytest.fixture
def pool_limit(cupy):
    """``limit(headroom)`` caps CuPy's pool at what is in use now plus ``headroom`` bytes, for the test."""
    pool = cupy.get_default_memory_pool()
    previous = pool.get_limit()

    def limit(headroom):
        pool.free_all_blocks()  # cached blocks count against the limit
        pool.set_limit(size=pool.used_bytes() + headroom)

    yield limit
    pool.set_limit(size=previous)


@pytest.mark.gpu
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("X_format", ["page-locked", "staged", "csr"])
def test_gpu_streamed_pass_equals_the_resident_pass_and_repeats_exactly(cupy, pool_limit, X_format):
    """Host X in pieces: page-locked (``resident``'s), pageable through the staging buffers, or CSR."""
    from fastsoftmax.backends.cuda import CudaBackend

    seed = time.time_ns() % 2**32
    n, d, c = 200_003, 64, 10
    X, y, W, b = make_problem(n, d, c, np.float32, seed=seed)
    if X_format == "csr":
        X[np.random.default_rng(seed).random(X.shape) < 0.7] = 0
        X = sp.csr_matrix(X)
    backend = CudaBackend()
    sw = np.random.default_rng(seed).uniform(0.5, 2.0, n).astype(np.float32)
    args = (backend.asarray(y), backend.asarray(sw), c, 1e-3)
    params = (backend.asarray(W), backend.asarray(b))
    X_resident = backend.resident(X)
    assert not isinstance(X_resident, np.ndarray) and not sp.issparse(X_resident)
    loss_ref, (dW_ref, db_ref) = SoftmaxObjective(backend, X_resident, *args).loss_grad(params)
    dW_ref, db_ref = cupy.asnumpy(dW_ref), cupy.asnumpy(db_ref)
    del X_resident

    pool_limit(24 << 20)  # X (51 MB dense, 31 MB CSR) no longer fits
    X_host = backend.resident(X)
    assert isinstance(X_host, np.ndarray) or sp.issparse(X_host), f"seed {seed}"
    is_pinned = cupy.cuda.pinned_memory.is_memory_pinned
    if X_format == "staged":
        del X_host
        X_host = X
    if X_format != "csr":
        assert is_pinned(X_host.ctypes.data) == (X_format == "page-locked")
    rows = backend.max_chunk_rows(X_host, c)
    assert n // rows >= 3, f"seed {seed}: {rows} rows per piece; the test wants several pieces in flight"
    streamed = SoftmaxObjective(backend, X_host, *args, chunk_rows=rows)
    results = [streamed.loss_grad(params) for _ in range(2)]
    (loss, (dW, db)), (loss_again, (dW_again, db_again)) = results
    rtol = rtol_for(np.float32, n)
    assert abs(loss - loss_ref) <= rtol * loss_ref, f"seed {seed}"
    assert max_rel_err(cupy.asnumpy(dW), dW_ref) <= rtol, f"seed {seed}"
    assert max_rel_err(cupy.asnumpy(db), db_ref) <= rtol, f"seed {seed}"
    # Same pieces, same GEMMs and kernels, one compute stream: the same bits every run
    # (for dense X; cuSPARSE's default SpMM algorithm does not promise it).
    if X_format != "csr":
        assert loss_again == loss, f"seed {seed}"
        np.testing.assert_array_equal(cupy.asnumpy(dW_again), cupy.asnumpy(dW), err_msg=f"seed {seed}")
        np.testing.assert_array_equal(cupy.asnumpy(db_again), cupy.asnumpy(db), err_msg=f"seed {seed}")
