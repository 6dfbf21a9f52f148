"""What the application and an inference process say to each other.

Messages are small frozen dataclasses, pickled over a socket. Frames never
travel in them: the application writes model inputs into shared memory (an
:class:`InputArena`) and sends only which slots to read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from multiprocessing import resource_tracker, shared_memory

import numpy as np
import numpy.typing as npt

from coral_mfg.inference.adapters import RawDetections

#: Crops graded per request; more are sent in further requests.
CROP_SLOTS = 16
#: Input slots per process: one request runs while the next is being written.
LANES = 2


@dataclass(frozen=True)
class ModelSpec:
    """One model as a process opens it."""

    path: str
    edgetpu: bool  # an Edge TPU build: opened with the delegate
    input_size: tuple[int, int]  # (width, height)
    input_dtype: str  # "uint8", "int8" or "float32", for the record: the tensor says it too
    #: detector outputs by tensor index: boxes, classes, scores, count
    layout: tuple[int, ...] | None = None


@dataclass(frozen=True)
class KnownAnswer:
    """A crop whose scores the Edge TPU build of the classifier must give as its CPU build does.

    A libedgetpu built for another TensorFlow may run without crashing and
    return garbage: this is how the process catches it before any frame is graded.
    """

    image: str  # the crop (any size: it is resized to the classifier's input)
    cpu_model: str  # the classifier's CPU build
    steps: int  # quantization steps of the output the two may differ by


@dataclass(frozen=True)
class ProcessConfig:
    """Everything an inference process needs to open its models, sent as its first message."""

    name: str
    runtime: str  # the interpreter module: ai_edge_litert.interpreter
    device: str  # "edgetpu" or "cpu": the device the process drives
    edgetpu_device: str | None
    edgetpu_library: str
    cpu_threads: int
    detector: ModelSpec
    classifier: ModelSpec
    arena: str  # shared-memory name
    edgetpu_lock: str = ""  # the device's lock (see device_lock), held for the process's life
    edgetpu_name: str = ""  # how messages call the device: "usb:0", "the Edge TPU"
    known_answer: KnownAnswer | None = None
    #: cameras' own classifiers, after the co-compiled one: ``Classify.classifier`` 1, 2 ...
    classifiers: tuple[ModelSpec, ...] = ()

    @property
    def all_classifiers(self) -> tuple[ModelSpec, ...]:
        return (self.classifier, *self.classifiers)

    @property
    def crop_size(self) -> tuple[int, int]:
        """The crop slots' size: room for the largest classifier input."""
        return max((c.input_size for c in self.all_classifiers), key=lambda s: s[0] * s[1])


@dataclass(frozen=True)
class Detect:
    """Run the detector on the image in ``lane``'s detector slot."""

    lane: int


@dataclass(frozen=True)
class Classify:
    """Run a classifier (0: the co-compiled one) on the first ``count`` crop slots of
    ``lane``."""

    lane: int
    count: int
    classifier: int = 0


@dataclass(frozen=True)
class MeasureBound:
    """Invoke the models in a tight loop for ``seconds``: the pure-inference bound."""

    seconds: float
    classify_share: float


@dataclass(frozen=True)
class Stop:
    """Close the models and exit."""


Request = Detect | Classify | MeasureBound | Stop


class Step:
    """The start-up steps of a process, each with its own deadline (see client.STEP_DEADLINES)."""

    START = "start"  # the interpreter starting, imports
    CLAIM = "claim"  # taking the device's lock
    RUNTIME = "runtime"  # loading libedgetpu
    OPEN = "open"  # libedgetpu opening the device: retries for 25 s when it may not
    BUILD = "build"  # building an interpreter (the delegate prepares its graph)
    INVOKE = "invoke"  # the first invoke
    CHECK = "check"  # the known-answer check


@dataclass(frozen=True)
class Stage:
    """The process is about to do something that may crash: said first, so a crash has a cause."""

    what: str
    step: str = Step.BUILD


@dataclass(frozen=True)
class RuntimeLoaded:
    """libedgetpu is loaded: which file, and the version it reports (``edgetpu_version()``)."""

    library: str
    path: str
    version: str


@dataclass(frozen=True)
class Ready:
    """The models are open and answered one invoke each."""

    detail: str


@dataclass(frozen=True, eq=False)
class Detected:
    """The detector's raw outputs and the time the process spent on the request."""

    raw: RawDetections
    busy_s: float


@dataclass(frozen=True, eq=False)
class Classified:
    """Dequantized class scores, one row per crop."""

    scores: npt.NDArray[np.float32]
    busy_s: float


@dataclass(frozen=True)
class Bound:
    frames: int
    seconds: float


@dataclass(frozen=True)
class Failed:
    """A request or the start-up failed without killing the process.

    ``kind`` says whose it is: ``model`` (the file is unusable), ``no_runtime``
    (libedgetpu could not be loaded), ``no_device`` (it found no Edge TPU it could
    open), ``in_use`` (another process holds the device's lock), ``setup`` (the
    lock cannot be made), ``wrong_answer`` (the known-answer check failed), or
    ``error`` (anything else the runtime said).
    """

    message: str
    kind: str = "error"


Reply = Stage | RuntimeLoaded | Ready | Detected | Classified | Bound | Failed


@dataclass
class InputArena:
    """The model inputs of one process in shared memory: the detector's image and the crops.

    The application writes RGB uint8 pixels at each model's input size; the
    process converts them to the model's input type while copying them in.
    There are :data:`LANES` of each, so the next request can be written while
    one runs. The crop slots have room for the largest classifier's input; a
    smaller classifier's crops use the same memory (:meth:`crops_at`).
    """

    detector_size: tuple[int, int]
    classifier_size: tuple[int, int]
    shm: shared_memory.SharedMemory
    owner: bool
    detector: npt.NDArray[np.uint8] = field(init=False)
    crops: npt.NDArray[np.uint8] = field(init=False)

    def __post_init__(self) -> None:
        (dw, dh), (cw, ch) = self.detector_size, self.classifier_size
        det_bytes = LANES * dw * dh * 3
        self.detector = np.ndarray((LANES, dh, dw, 3), np.uint8, self.shm.buf, 0)
        self.crops = np.ndarray((LANES, CROP_SLOTS, ch, cw, 3), np.uint8, self.shm.buf,
                                det_bytes)

    @staticmethod
    def nbytes(detector_size: tuple[int, int], classifier_size: tuple[int, int]) -> int:
        (dw, dh), (cw, ch) = detector_size, classifier_size
        return LANES * (dw * dh * 3 + CROP_SLOTS * cw * ch * 3)

    @classmethod
    def create(cls, detector_size: tuple[int, int], classifier_size: tuple[int, int]) -> InputArena:
        shm = shared_memory.SharedMemory(
            create=True, size=cls.nbytes(detector_size, classifier_size))
        _OWNED[shm.name] = shm
        return cls(detector_size, classifier_size, shm, owner=True)

    @classmethod
    def attach(
        cls, name: str, detector_size: tuple[int, int], classifier_size: tuple[int, int]
    ) -> InputArena:
        shm = shared_memory.SharedMemory(name=name)
        # The application owns and unlinks it; this process must not (Python < 3.13
        # registers every attach with the resource tracker).
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        return cls(detector_size, classifier_size, shm, owner=False)

    def crops_at(self, size: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """The crop slots, for a classifier whose input is ``size`` (w, h)."""
        w, h = size
        cw, ch = self.classifier_size
        assert w * h <= cw * ch, "the arena was made for the largest classifier"
        if (w, h) == (cw, ch):
            return self.crops
        start = LANES * self.detector_size[0] * self.detector_size[1] * 3
        return np.ndarray((LANES, CROP_SLOTS, h, w, 3), np.uint8, self.shm.buf, start)

    @property
    def name(self) -> str:
        return self.shm.name

    def close(self) -> None:
        """Unmap (and, for the owner, remove) the memory; safe to call twice."""
        if self.owner:
            _OWNED.pop(self.shm.name, None)
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()  # the name goes now; the mapping lives while it is used
        self.detector = self.crops = np.zeros((0,), np.uint8)  # drop this object's views
        with contextlib.suppress(BufferError):  # a view still held elsewhere: left to the GC
            self.shm.close()


#: Shared memory this process made and has not removed yet, by name.
_OWNED: dict[str, shared_memory.SharedMemory] = {}


def remove_shared_memory() -> None:
    """Remove every shared memory this process made, for an exit that skips the orderly
    close (a second Ctrl-C): nothing is left in /dev/shm, and Python's resource tracker
    has nothing to warn of."""
    for shm in list(_OWNED.values()):
        with contextlib.suppress(OSError):
            shm.unlink()
    _OWNED.clear()
