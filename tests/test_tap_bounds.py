"""``twistd gearman``'s queue bounds: --max-queued-jobs, --max-queued-bytes, --max-queue."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from gearmanpy.tap import JOB_OVERHEAD, Options, _makeService, available_memory, default_bounds


def parse(*argv: str) -> Options:
    o = Options()
    o.parseOptions(list(argv))
    return o


class BoundOptionTests(SynchronousTestCase):
    def test_defaults_follow_memory(self) -> None:
        """Unless given, the bounds are a quarter of the memory for payloads and a quarter
        for the jobs' bookkeeping."""
        o = parse()
        jobs, size = default_bounds(available_memory())
        self.assertEqual((o["max-queued-jobs"], o["max-queued-bytes"]), (jobs, size))
        self.assertEqual(default_bounds(4 << 30), ((1 << 30) // JOB_OVERHEAD, 1 << 30))
        self.assertGreater(available_memory(), 0)

    def test_given_values_and_suffixes(self) -> None:
        o = parse("--max-queued-jobs", "10", "--max-queued-bytes", "2G")
        self.assertEqual((o["max-queued-jobs"], o["max-queued-bytes"]), (10, 2 << 30))
        for value, n in (("512M", 512 << 20), ("1k", 1024), ("100", 100), ("0", 0), ("3KB", 3072)):
            self.assertEqual(parse("--max-queued-bytes", value)["max-queued-bytes"], n, value)

    def test_bad_values_are_usage_errors(self) -> None:
        for argv in (
            ["--max-queued-jobs", "-1"],
            ["--max-queued-jobs", "many"],
            ["--max-queued-bytes", "lots"],
            ["--max-queued-bytes", "-1G"],
            ["--max-queue", "f"],
            ["--max-queue", "=3"],
            ["--max-queue", "f=x"],
            ["--max-queue", "f=1,2"],
            ["--max-queue", "f=-1"],
        ):
            with self.assertRaises(UsageError, msg=argv) as e:
                parse(*argv)
            self.assertNotIn("\n", str(e.exception))

    def test_max_queue_reaches_the_core(self) -> None:
        """--max-queue limits are kept by name, so they apply when the function appears."""
        o = parse(
            "--queue",
            "memory",
            "--max-queue",
            "resize=10",
            "--max-queue",
            "a=b=1,2,3",
            "--max-queued-jobs",
            "7",
            "--max-queued-bytes",
            "1M",
        )
        core = _makeService(o, MemoryReactorClock()).core
        self.assertEqual(core.max_queues, {b"resize": [10, 10, 10], b"a=b": [1, 2, 3]})
        self.assertEqual((core.max_queued_jobs, core.max_queued_bytes), (7, 1 << 20))
        self.assertEqual(core.function(b"resize").max_queue, [10, 10, 10])
