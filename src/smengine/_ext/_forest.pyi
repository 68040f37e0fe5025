import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

NODE_DTYPE: np.dtype[np.void]
BLOCK_DTYPE: np.dtype[np.void]

@disjoint_base
class ForestTables:
    def __init__(
        self,
        nodes: npt.NDArray[np.int32],
        leaf: npt.NDArray[np.float64],
        root: npt.NDArray[np.int64],
        n_features: int,
        boxes: npt.NDArray[np.float32] | None = ...,
        blocks: npt.NDArray[np.uint8] | None = ...,
        bleaf: npt.NDArray[np.float64] | None = ...,
        broot: npt.NDArray[np.int32] | None = ...,
        isa_cap: int = ...,
        average: bool = ...,
        lin_coef: npt.NDArray[np.float64] | None = ...,
        lin_intercept: float = ...,
    ) -> None: ...
    @property
    def has_blocks(self) -> bool: ...
    @property
    def isa_cap(self) -> int: ...
    @property
    def isa(self) -> int: ...
    @property
    def n_trees(self) -> int: ...
    @property
    def n_features(self) -> int: ...
    @property
    def average(self) -> bool: ...
    @property
    def divisor(self) -> float: ...
    @property
    def lin_coef(self) -> npt.NDArray[np.float64] | None: ...
    @property
    def lin_intercept(self) -> float: ...
    @property
    def nodes(self) -> npt.NDArray[np.void]: ...
    @property
    def leaf(self) -> npt.NDArray[np.float64]: ...
    @property
    def root(self) -> npt.NDArray[np.int64]: ...
    @property
    def boxes(self) -> npt.NDArray[np.float32] | None: ...
    @property
    def blocks(self) -> npt.NDArray[np.void] | None: ...
    @property
    def bleaf(self) -> npt.NDArray[np.float64] | None: ...
    @property
    def broot(self) -> npt.NDArray[np.int32] | None: ...
    def set_isa_cap(self, cap: int) -> None: ...
    def with_blocks(
        self,
        boxes: npt.NDArray[np.float32],
        blocks: npt.NDArray[np.uint8],
        bleaf: npt.NDArray[np.float64],
        broot: npt.NDArray[np.int32],
    ) -> ForestTables: ...

def leaf_boxes(forest: ForestTables, out: npt.NDArray[np.float32]) -> None: ...
def build_blocks(
    forest: ForestTables,
    blocks: npt.NDArray[np.uint8],
    bslot: npt.NDArray[np.int32],
    broot: npt.NDArray[np.int32],
    todo: npt.NDArray[np.int32],
) -> tuple[int, int]: ...
def isa(cap: int = ...) -> int: ...
def exit_lut() -> bytes: ...
def predict(
    forest: ForestTables,
    X: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float64],
    sd: npt.NDArray[np.float64],
    reuse: int,
    block: int,
    n_threads: int,
    stats: npt.NDArray[np.int64],
    stride: int = ...,
) -> int: ...
def lag_distances(
    X: npt.NDArray[np.float32],
    probes: npt.NDArray[np.intp],
    inv: npt.NDArray[np.float32],
    out: npt.NDArray[np.float32],
) -> None: ...
