import numpy as np
import numpy.typing as npt

def predict(
    nodes: npt.NDArray[np.int32],
    leaf: npt.NDArray[np.float64],
    root: npt.NDArray[np.int64],
    X: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float64],
    sd: npt.NDArray[np.float64],
    reuse: bool,
    block: int,
    n_threads: int,
    stats: npt.NDArray[np.int64],
) -> int: ...
