import numpy as np
import numpy.typing as npt

def leaf_boxes(
    nodes: npt.NDArray[np.int32],
    leaf: npt.NDArray[np.float64],
    root: npt.NDArray[np.int64],
    n_features: int,
    out: npt.NDArray[np.float32],
) -> None: ...
def build_blocks(
    nodes: npt.NDArray[np.int32],
    leaf: npt.NDArray[np.float64],
    root: npt.NDArray[np.int64],
    n_features: int,
    blocks: npt.NDArray[np.uint8],
    bslot: npt.NDArray[np.int32],
    broot: npt.NDArray[np.int32],
    todo: npt.NDArray[np.int32],
) -> tuple[int, int]: ...
def isa() -> int: ...
def predict(
    nodes: npt.NDArray[np.int32],
    leaf: npt.NDArray[np.float64],
    root: npt.NDArray[np.int64],
    X: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float64],
    sd: npt.NDArray[np.float64],
    reuse: int,
    block: int,
    n_threads: int,
    stats: npt.NDArray[np.int64],
    boxes: npt.NDArray[np.float32] | None = ...,
    blocks: npt.NDArray[np.uint8] | None = ...,
    bleaf: npt.NDArray[np.float64] | None = ...,
    broot: npt.NDArray[np.int32] | None = ...,
    stride: int = ...,
) -> int: ...
def lag_distances(
    X: npt.NDArray[np.float32],
    probes: npt.NDArray[np.intp],
    inv: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
) -> None: ...
