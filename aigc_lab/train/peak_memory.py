"""How much memory a run added at its peak, measured while it runs (the estimate is ``models/memory.py``)."""

from __future__ import annotations

from typing import Any

MB = 2**20


class PeakMemory:
    """How much memory a run added at its peak: sampled while it runs (``with PeakMemory(device) as m:``).

    CPU: the process's resident set, sampled every ``interval`` seconds on a daemon thread, minus what it
    was when the run started (the process-wide high-water mark would mix runs up). CUDA: the device's peak
    allocation since the start, minus the allocation at the start.
    """

    def __init__(self, device: Any = None, interval: float = 0.02) -> None:
        self.device, self.interval = device, interval
        self.start_mb = self.peak_mb = 0.0
        self._stop: Any = None

    @property
    def added_mb(self) -> float:
        """Peak minus the start (MB)."""
        return max(0.0, self.peak_mb - self.start_mb)

    def _cuda(self) -> Any:
        import sys

        torch = sys.modules.get("torch")
        dev = self.device
        if torch is not None and dev is not None and getattr(dev, "type", str(dev)) == "cuda":
            return torch.cuda
        return None

    def __enter__(self) -> PeakMemory:
        import threading

        cuda = self._cuda()
        if cuda is not None:
            cuda.reset_peak_memory_stats(self.device)
            self.start_mb = self.peak_mb = cuda.memory_allocated(self.device) / MB
            return self
        import psutil

        proc = psutil.Process()
        self.start_mb = self.peak_mb = proc.memory_info().rss / MB
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(self.interval):
                self.peak_mb = max(self.peak_mb, proc.memory_info().rss / MB)

        threading.Thread(target=sample, name="aigc-lab-peak-memory", daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        cuda = self._cuda()
        if cuda is not None:
            self.peak_mb = max(self.peak_mb, cuda.max_memory_allocated(self.device) / MB)
            return
        import psutil

        self._stop.set()
        self.peak_mb = max(self.peak_mb, psutil.Process().memory_info().rss / MB)
