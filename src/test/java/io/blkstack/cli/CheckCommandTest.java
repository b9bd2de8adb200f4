package io.blkstack.cli;

import static io.blkstack.cli.CommandRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.scenario.BioSetSplitStack;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** Runs {@code blkstack check} in-process on built-in stacks, workloads and deliberately broken devices. */
class CheckCommandTest {

    // Proves the command reports seed 000's deadlock: the stack without a rescuer under the legacy
    // policies exits 3, names the bio set in the knot and prints a replay command; running that
    // replay command exits 3 again and prints the same knot.
    @Test
    void legacyDeadlockExitsThreeWithKnotAndReplay() {
        CommandRun r = run("check", "--stack", "bioset-split-no-rescuer", "--schedules", "20", "--seed", "1",
                "--policy", "submit-order=legacy", "--policy", "bioset-rescuer=legacy");
        assertEquals(ExitCodes.DEADLOCK, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains(BioSetSplitStack.bioSetName()), r.out());
        Matcher m = Pattern.compile("replay: blkstack check (.*)").matcher(r.out());
        assertTrue(m.find(), r.out());
        assertFalse(r.out().contains("VACUOUS"), r.out());
        String[] args = ("check " + m.group(1).replace("'", "")).split(" ");
        CommandRun replay = run(args);
        assertEquals(ExitCodes.DEADLOCK, replay.exitCode(), replay.out() + replay.err());
        String knot = r.out().substring(r.out().indexOf("wait-for knot:"));
        assertTrue(replay.out().contains(knot.substring(0, knot.indexOf("components:"))), replay.out());
    }

    // Proves the default policies with a rescuer pass: exit 0, no findings, coverage shows punts.
    @Test
    void defaultPoliciesExitZero() {
        CommandRun r = run("check", "--stack", "bioset-split", "--schedules", "30", "--seed", "7", "--strategy", "pct:3");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("findings: 0"), r.out());
        assertTrue(r.out().contains("schedules/s"), r.out());
        assertFalse(r.out().contains("VACUOUS"), r.out());
        assertTrue(r.out().matches("(?s).*bioset\\.rescuer-punts=[1-9].*"), r.out());
    }

    // Proves bad options are usage errors (exit 1) that name the value.
    @Test
    void unknownStackIsUsageError() {
        CommandRun r = run("check", "--stack", "nope");
        assertEquals(ExitCodes.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains("'nope'"), r.err());
        CommandRun jobs = run("check", "--stack", "memory", "--jobs", "0");
        assertEquals(ExitCodes.USAGE, jobs.exitCode(), jobs.out() + jobs.err());
        assertTrue(jobs.err().contains("--jobs: '0'"), jobs.err());
    }

    /** A small workload that writes and reads back in a 64 KiB region. */
    private static final String SMALL = "tasks=2,ops=6,mix=write:50,read:40,flush:10,size=4k-16k,region=0-128k,flushEvery=3";

    /** The workload of examples/check-split.workload, as one line. */
    private static final String SPLIT_EXAMPLE = "tasks=3,ops=8,mix=write:60,read:30,flush:10,size=4k-64k,region=0-1m,flushEvery=4";

    /** The knot part of an output, up to the components section. */
    private static String knot(String out) {
        String k = out.substring(out.indexOf("wait-for knot:"));
        return k.substring(0, k.indexOf("components:"));
    }

    /** Runs the replay command printed in {@code out} (quotes stripped, as a shell would). */
    private static CommandRun replayFrom(String out) {
        Matcher m = Pattern.compile("replay: blkstack check (.*)").matcher(out);
        assertTrue(m.find(), out);
        return run(("check " + m.group(1).replace("'", "")).split(" "));
    }

    // Proves the workload path end to end: the splitting stack over memory with the legacy bio-set
    // policy is reported (exit 3) with a knot naming the splitting set and a task's pending list;
    // the printed replay command prints the same knot; under default policies the same campaign
    // exits 0 with punts to the rescuer in the coverage line.
    @Test
    void workloadLegacyFindsKnotAndDefaultsPass() {
        CommandRun legacy = run("check", "--stack", "split-memory", "--workload", SPLIT_EXAMPLE, "--schedules", "30",
                "--policy", "bioset-rescuer=legacy", "--no-progress");
        assertEquals(ExitCodes.DEADLOCK, legacy.exitCode(), legacy.out() + legacy.err());
        assertTrue(legacy.out().contains("mempool splitter-bs-bio"), legacy.out());
        assertTrue(legacy.out().contains("submit list"), legacy.out());
        CommandRun replay = replayFrom(legacy.out());
        assertEquals(ExitCodes.DEADLOCK, replay.exitCode(), replay.out() + replay.err());
        assertTrue(replay.out().contains(knot(legacy.out())), replay.out());
        CommandRun fixed = run("check", "--stack", "split-memory", "--workload", SPLIT_EXAMPLE, "--schedules", "30", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, fixed.exitCode(), fixed.out() + fixed.err());
        assertTrue(fixed.out().contains("findings: 0"), fixed.out());
        assertTrue(fixed.out().matches("(?s).*bioset\\.rescuer-punts=[1-9].*"), fixed.out());
    }

    // Proves --check-determinism runs every seed twice and finds no difference on a workload
    // campaign with faults in swarm mode (exit 0 and the determinism line).
    @Test
    void checkDeterminismFindsNoMismatch() {
        CommandRun r = run("check", "--stack", "split-memory", "--workload", SMALL, "--schedules", "10", "--check-determinism",
                "--faults", "swarm,latency:mem0=0.5/200us,alloc:pages=0.2,io:mem0=0.05", "--strategy", "pct:3");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("determinism: every seed ran twice with the same trace hash"), r.out());
    }

    // Proves the vacuity flag: a campaign with a huge arena, no pressure and no faults never uses a
    // reserve nor fires a fault, and says so (exit 0: vacuous is not a finding).
    @Test
    void hugeMemoryNoFaultsIsVacuous() {
        CommandRun r = run("check", "--stack", "memory", "--workload", SMALL + ",pressure=off", "--memory", "16MiB",
                "--faults", "", "--schedules", "5");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("VACUOUS"), r.out());
    }

    // Proves --trace writes the traced run as JSON lines, one event per line, and that the rerun
    // for the trace had the campaign's hash.
    @Test
    void traceIsWrittenAsJsonLines(@TempDir Path dir) throws Exception {
        Path trace = dir.resolve("trace.jsonl");
        CommandRun r = run("check", "--stack", "memory", "--workload", SMALL, "--schedules", "3", "--trace", trace.toString());
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("(same trace hash as the campaign's run)"), r.out());
        List<String> lines = Files.readAllLines(trace);
        assertTrue(lines.size() > 10, "events: " + lines.size());
        for (String line : lines) {
            assertTrue(line.matches("\\{\"seq\":\\d+,\"t\":\\d+,\"task\":\".*\",\"type\":\".*\",\"detail\":\".*\"}"), line);
        }
    }

    // Proves misuse detection through the CLI: a stacking device whose completion callback waits
    // on a completion is reported as MISUSE (blocking in atomic context), exit 3.
    @Test
    void blockingCompletionCallbackIsMisuse() {
        CommandRun r = runWithTestStack("test-block-in-endio", MisbehavingDevices.Fault.BLOCK_IN_ENDIO);
        assertEquals(ExitCodes.DEADLOCK, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("MISUSE: 1"), r.out());
        assertTrue(r.out().contains("blocking in atomic context"), r.out());
    }

    // Proves leak detection through the CLI: a stacking device that never puts its clones is
    // reported as MISUSE naming its bio set when the kernel closes at the end of the run.
    @Test
    void leakedBioIsMisuse() {
        CommandRun r = runWithTestStack("test-leak-clone", MisbehavingDevices.Fault.LEAK_CLONE);
        assertEquals(ExitCodes.DEADLOCK, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("MISUSE: 1"), r.out());
        assertTrue(r.out().contains("bad-leak_clone-bs"), r.out());
        assertTrue(r.out().contains("not returned"), r.out());
    }

    /** Adds a broken stack under {@code name} to one command line and runs one schedule of a small workload on it. */
    private static CommandRun runWithTestStack(String name, MisbehavingDevices.Fault fault) {
        Map<String, CheckCommand.BuiltInStack> extra = Map.of(name, new CheckCommand.BuiltInStack("test: " + fault,
                k -> MisbehavingDevices.over(k, new MemoryDevice(k, "mem0", 1 << 20, 10_000), fault), null));
        CommandLine.IFactory factory = new CommandLine.IFactory() {
            @Override
            public <K> K create(Class<K> type) throws Exception {
                return type == CheckCommand.class ? type.cast(new CheckCommand(extra)) : CommandLine.defaultFactory().create(type);
            }
        };
        return run(Main.commandLine(factory), "check", "--stack", name, "--workload",
                "tasks=1,ops=2,mix=write:100,read:0,flush:0,size=4k,region=0-64k,pressure=off", "--schedules", "1");
    }

    /** A thin pool over memory devices: its construction reads and writes metadata on {@code meta}. */
    private static final String THIN_OVER_MEMORY = """
            memory: 8MiB
            devices:
              meta: { memory: 1MiB }
              data: { memory: 8MiB }
            mapped:
              pool: |
                0 16384 thin-pool meta data 128 16
              vol0: |
                0 16384 thin pool 0
            exports:
              vol0: { device: vol0 }
            """;

    // Proves a --config run without --faults gets the default fault set, swarm-thinned, and that the
    // summary names it: the header spells out the rules and says it is the default, and faults fired.
    @Test
    void configRunsGetTheDefaultFaultSetNamed(@TempDir Path dir) throws Exception {
        Path config = dir.resolve("thin.yaml");
        Files.writeString(config, THIN_OVER_MEMORY);
        CommandRun r = run("check", "--config", config.toString(), "--schedules", "4", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        String header = r.out().lines().findFirst().orElseThrow();
        assertTrue(header.contains("faults 'swarm' (swarm over " + io.blkstack.sim.SimFaults.Spec.DEFAULT_SET), header);
        assertTrue(header.contains("[default for --config]"), header);
        assertTrue(r.out().contains("\nfaults: 'swarm' (swarm over " + io.blkstack.sim.SimFaults.Spec.DEFAULT_SET), r.out());
        assertFalse(r.out().contains("fault fires: none"), r.out());
        assertTrue(r.out().matches("(?s).*fault fires: \\{.*=[1-9].*"), r.out());
    }

    // Proves faults stay off while the stack is built unless --faults-at-setup: failing the first
    // metadata I/O of a thin pool makes the pool refuse to start when faults reach set-up (the run
    // counts workload.stack-refused), while without the flag the first I/O after set-up fails and the
    // stack was built (no refusal). Both exit 0: neither is a finding.
    @Test
    void faultsAtSetUpOnlyWhenAsked(@TempDir Path dir) throws Exception {
        Path config = dir.resolve("thin.yaml");
        Files.writeString(config, THIN_OVER_MEMORY);
        CommandRun atSetup = run("check", "--config", config.toString(), "--schedules", "2", "--faults", "io:meta@1",
                "--faults-at-setup", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, atSetup.exitCode(), atSetup.out() + atSetup.err());
        assertTrue(atSetup.out().contains("workload.stack-refused=2"), atSetup.out());
        CommandRun after = run("check", "--config", config.toString(), "--schedules", "2", "--faults", "io:meta@1", "--no-progress");
        assertTrue(after.out().contains("faults 'io:meta@1' after set-up"), after.out());
        assertFalse(after.out().contains("workload.stack-refused"), after.out());
        assertTrue(after.out().contains("io:meta=2"), "the first metadata I/O after set-up fails in each run: " + after.out());
    }

    // Proves --faults swarm alone injects faults (it used to thin an empty list and inject nothing).
    @Test
    void swarmAloneInjectsFaults() {
        CommandRun r = run("check", "--stack", "memory", "--workload", SMALL, "--faults", "swarm", "--schedules", "10",
                "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().matches("(?s).*fault fires: \\{.*=[1-9].*"), r.out());
    }
}
