import numpy as np
import numpy.typing as npt

def exp_filter(
    values: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    times: npt.NDArray[np.float64],
    ctimes: npt.NDArray[np.float64],
    carry: bool,
    max_gap: float,
    out: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    gain: npt.NDArray[np.float64],
    state: npt.NDArray[np.float64],
    last: npt.NDArray[np.float64],
    step: float,
    n_threads: int,
) -> int: ...
