package io.blkstack.cli;

import static io.blkstack.cli.CommandRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** {@code check --engine sim|threads}: the same stack and workload on the checker or on real threads. */
class CheckEngineTest {

    // Proves the threads engine runs the check's own stack and workload on real threads: the
    // README's example under the default policies completes both runs with its data checks passed
    // and the kernel closed, and says so.
    @Test
    void threadsEngineRunsTheWorkloadOnRealThreads() {
        CommandRun r = run("check", "--engine", "threads", "--stack", "split-memory", "--workload",
                "examples/check-split.workload", "--schedules", "2");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("engine threads"), r.out());
        assertTrue(r.out().contains("runs 2 on real threads"), r.out());
        assertTrue(r.out().contains("outcomes {OK=2}"), r.out());
    }

    // Proves the engine is checked and that the simulator-only options are refused with threads.
    @Test
    void badEngineAndSimulatorOnlyOptionsAreUsageErrors() {
        CommandRun bad = run("check", "--engine", "fibers", "--stack", "memory");
        assertEquals(ExitCodes.USAGE, bad.exitCode(), bad.out() + bad.err());
        assertTrue(bad.err().contains("'fibers' is not sim or threads"), bad.err());
        CommandRun replay = run("check", "--engine", "threads", "--stack", "memory", "--replay", "7");
        assertEquals(ExitCodes.USAGE, replay.exitCode(), replay.out() + replay.err());
        assertTrue(replay.err().contains("need the simulator"), replay.err());
    }
}
