package io.blkstack.cli;

import static io.blkstack.cli.CommandRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/** {@code blkstack check --via nbd}: the workload enters through the NBD server's request path. */
class CheckViaNbdTest {

    /** Three clients of 64 KiB to 1 MiB requests; every free page but 360 taken before the server is built. */
    private static final String WORKLOAD = "tasks=3,ops=4,mix=write:50,read:40,flush:10,size=64k-1m,region=0-3m,"
            + "pressure=on,sparePages=360";

    // Proves the old payload-budget sizing is a finding through the command: with
    // --policy nbd-budget=legacy the campaign exits 3 with NBD readers waiting for pages in the
    // knot and a replay command carrying --via nbd, which replays to the same outcome and hash.
    @Test
    void legacyBudgetOverCommitExitsThreeAndReplays() {
        CommandRun r = run("check", "--stack", "memory", "--via", "nbd", "--workload", WORKLOAD, "--memory", "4MiB",
                "--schedules", "5", "--seed", "3", "--policy", "nbd-budget=legacy", "--no-progress");
        assertEquals(ExitCodes.DEADLOCK, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("-reader") && r.out().contains("waits on page allocator"), r.out());
        Matcher m = Pattern.compile("replay: blkstack check (.*)").matcher(r.out());
        assertTrue(m.find(), r.out());
        assertTrue(m.group(1).contains("--via nbd"), m.group(1));
        Matcher summary = Pattern.compile("first finding, (\\w+) seed=(-?\\d+) hash=(\\w+)").matcher(r.out());
        assertTrue(summary.find(), r.out());
        CommandRun replay = run(("check " + m.group(1).replace("'", "")).split(" "));
        assertEquals(ExitCodes.DEADLOCK, replay.exitCode(), replay.out() + replay.err());
        assertTrue(replay.out().contains("replay: " + summary.group(1) + " seed=" + summary.group(2) + " hash="
                + summary.group(3)), replay.out());
    }

    // Proves the same workload through the NBD path is clean under the default (admitted) budget:
    // exit 0, no findings, and the export's requests were windowed to what the budget left.
    @Test
    void admittedBudgetExitsZero() {
        CommandRun r = run("check", "--stack", "memory", "--via", "nbd", "--workload", WORKLOAD, "--memory", "4MiB",
                "--schedules", "5", "--seed", "3", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("findings: 0"), r.out());
        assertTrue(r.out().contains("via nbd"), r.out());
    }

    // Proves --via nbd works with nothing else given: the arena defaults to 4 MiB and the default
    // workload's pressure leaves the fewest pages the server's admission accepts, so every run is
    // admitted and clean (not a CRASH on a refused server).
    @Test
    void defaultWorkloadViaNbdIsAdmitted() {
        CommandRun r = run("check", "--stack", "memory", "--via", "nbd", "--schedules", "3", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("memory 4194304 bytes"), r.out());
        assertTrue(r.out().contains("outcomes: {OK=3}"), r.out());
    }
}
