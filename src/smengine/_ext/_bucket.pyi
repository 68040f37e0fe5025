import numpy as np
import numpy.typing as npt

def bucket(
    precip: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    pet: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    irrigation: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    s_fc: npt.NDArray[np.float64],
    s_wp: npt.NDArray[np.float64],
    s_crit: npt.NDArray[np.float64],
    depth: float,
    storage: npt.NDArray[np.float64],
    theta: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    et: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    drainage: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    n_threads: int,
) -> int: ...
def bucket_oudin(
    precip: npt.NDArray[np.float32],
    tmean: npt.NDArray[np.float32],
    ra: npt.NDArray[np.float64],
    s_fc: npt.NDArray[np.float64],
    s_wp: npt.NDArray[np.float64],
    s_crit: npt.NDArray[np.float64],
    depth: float,
    storage: npt.NDArray[np.float64],
    theta: npt.NDArray[np.float32],
    n_threads: int,
) -> int: ...
def antecedent_precipitation_index(
    precip: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    k: float,
    index: npt.NDArray[np.float64],
    out: npt.NDArray[np.float32] | npt.NDArray[np.float64],
    n_threads: int,
) -> int: ...
