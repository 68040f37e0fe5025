import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

from smengine._ext._forest import ForestTables

QUALITY_FLAG_CODES: dict[str, int]
GATHER_KINDS: dict[str, int]

@disjoint_base
class TileArrays:
    def __init__(
        self,
        static: npt.NDArray[np.float32],
        dynamic: npt.NDArray[np.float32],
        cindex: npt.NDArray[np.int32],
        coff: npt.NDArray[np.int64],
        plan: npt.NDArray[np.int32],
        sub: int,
        scale: npt.NDArray[np.float64] | None = None,
        offset: npt.NDArray[np.float64] | None = None,
    ) -> None: ...
    @property
    def sub(self) -> int: ...

@disjoint_base
class BucketState:
    def __init__(
        self,
        storage: npt.NDArray[np.float64],
        s_fc: npt.NDArray[np.float64],
        s_wp: npt.NDArray[np.float64],
        s_crit: npt.NDArray[np.float64],
        depth: npt.NDArray[np.float64],
        tcol: int,
        ra_col: int,
    ) -> None: ...
    @property
    def tcol(self) -> int: ...
    @property
    def ra_col(self) -> int: ...

@disjoint_base
class SWIState:
    def __init__(
        self,
        gain: npt.NDArray[np.float64],
        swi: npt.NDArray[np.float64],
        last: npt.NDArray[np.float64],
        T: npt.NDArray[np.float64],
        max_gap: npt.NDArray[np.float64] | None = ...,
        bucket: BucketState | None = ...,
    ) -> None: ...
    @property
    def bucket(self) -> BucketState: ...

@disjoint_base
class ChunkInputs:
    def __init__(
        self,
        tidx: npt.NDArray[np.int64],
        want: npt.NDArray[np.uint8],
        tday: npt.NDArray[np.float64],
        cvals: npt.NDArray[np.float32],
        consts: npt.NDArray[np.float64],
    ) -> None: ...

@disjoint_base
class Outputs:
    def __init__(
        self,
        sm: npt.NDArray[np.float32],
        sub_sd: npt.NDArray[np.float32],
        spread: npt.NDArray[np.float32],
        vfrac: npt.NDArray[np.float32],
        flag: npt.NDArray[np.uint8],
        fmean: npt.NDArray[np.float64] | None = None,
    ) -> None: ...

@disjoint_base
class Scratch:
    def __init__(
        self,
        xbuf: npt.NDArray[np.float32],
        okbuf: npt.NDArray[np.uint8],
        accbuf: npt.NDArray[np.float64],
    ) -> None: ...

def run_days(
    forest: ForestTables,
    tile: TileArrays,
    state: SWIState,
    chunk: ChunkInputs,
    out: Outputs,
    scratch: Scratch,
    day_inner: bool,
    reuse: int,
    min_valid: float,
    n_threads: int,
    stats: npt.NDArray[np.int64],
) -> int: ...
