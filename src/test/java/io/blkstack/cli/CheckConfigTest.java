package io.blkstack.cli;

import static io.blkstack.cli.CommandRun.run;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code blkstack check --config} on the configurations serve takes: the embedded default stack and
 * every example, file devices simulated, with every operation kind and the control events.
 */
class CheckConfigTest {

    /** Every operation kind in a small region. */
    static final String EVERY_OP = "tasks=2,ops=8,mix=write:30,read:30,flush:10,fua:10,discard:8,zeroes:6,zeroes-nohole:6,"
            + "size=4k-16k,region=0-256k,flushEvery=3";
    /** Seeded extra latency on every simulated device. */
    static final String FAULTS = "latency:*=0.5/200us";

    /**
     * The embedded default stack and every YAML example (remote NBD devices included: they connect
     * to simulated NBD servers of their configured size).
     */
    static Stream<Path> configurations() throws Exception {
        List<Path> all = new ArrayList<>();
        all.add(Path.of("src/main/resources/default-stack.yaml"));
        all.addAll(examples());
        return all.stream();
    }

    private static List<Path> examples() throws Exception {
        try (Stream<Path> examples = Files.list(Path.of("examples"))) {
            return examples.filter(p -> p.toString().endsWith(".yaml")).sorted().toList();
        }
    }

    // Proves a remote device without 'size' is refused with the device, the line and the reason,
    // not run half-way: check connects it to a simulated server of that size, never to the network.
    @Test
    void remoteDeviceWithoutSizeIsRefusedByName(@TempDir Path dir) throws Exception {
        Path config = dir.resolve("remote.yaml");
        Files.writeString(config, """
                devices:
                  r0: { nbd: "nbd://storage1/disk0" }
                exports:
                  default: { device: r0 }
                """);
        CommandRun r = run("check", "--config", config.toString(), "--schedules", "1");
        assertEquals(ExitCodes.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains(config + ":2: devices.r0: a remote device needs 'size' under check"), r.err());
    }

    // Proves every configuration serve takes runs under check with file devices simulated: every
    // operation kind, a table reload and a crash with restart among them, seeded latency, default
    // policies: exit 0 and 0 findings; the thin example also creates and deletes a thin snapshot.
    @ParameterizedTest
    @MethodSource("configurations")
    void everyConfigurationPassesWithEveryOperation(Path config) {
        boolean thin = config.getFileName().toString().equals("thin.yaml");
        String events = thin ? ",events=reload:1,snap:1,crash:1" : ",events=reload:1,crash:1";
        CommandRun r = run("check", "--config", config.toString(), "--workload", EVERY_OP + events, "--memory", "2MiB",
                "--faults", FAULTS, "--schedules", "3", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("findings: 0"), r.out());
        for (String counter : thin ? List.of("reloads", "restarts", "thin-snapshots", "fua-writes", "write-zeroes")
                : List.of("reloads", "restarts", "fua-writes", "write-zeroes")) {
            assertTrue(r.out().matches("(?s).*workload\\." + counter + "=[1-9].*"), counter + ": " + r.out());
        }
    }

    // Proves the legacy designs deadlock where the stack splits: the default stack (snapshot-origin
    // over striped) and the striped example, driven with bios of up to 1 MiB that cut into many
    // fragments, under dm-split=legacy (every fragment cloned in one call) with
    // bioset-rescuer=legacy, exit 3 with a knot on the splitting device's clone pool and its task's
    // submit list. Each fix alone holds: under dm-split=front a call never holds two unsubmitted
    // clones of one set, and with the rescuer the pending clones are punted to it.
    @ParameterizedTest
    @ValueSource(strings = {"src/main/resources/default-stack.yaml", "examples/striped-files.yaml"})
    void legacyDeadlocksWhereTheStackSplits(String config) {
        String[] common = {"check", "--config", config, "--workload", BIG_BIOS, "--memory", "8MiB", "--faults", FAULTS,
            "--schedules", "3", "--no-progress"};
        CommandRun legacy = run(concat(common, "--policy", "bioset-rescuer=legacy", "--policy", "dm-split=legacy"));
        assertEquals(ExitCodes.DEADLOCK, legacy.exitCode(), legacy.out() + legacy.err());
        assertTrue(legacy.out().matches("(?s).*waits on mempool dm-\\S+-bio .*submit list.*"), legacy.out());
        assertTrue(legacy.out().contains("mapAllFragments"), legacy.out());
        for (String policy : new String[] {"bioset-rescuer=legacy", "dm-split=legacy"}) {
            CommandRun one = run(concat(common, "--policy", policy));
            assertEquals(ExitCodes.SUCCESS, one.exitCode(), policy + ": " + one.out() + one.err());
            assertTrue(one.out().contains("findings: 0"), one.out());
        }
    }

    /** Bios of 256 KiB to 1 MiB, three tasks. */
    static final String BIG_BIOS = "tasks=3,ops=6,size=256k-1m,region=0-3m";

    private static String[] concat(String[] a, String... b) {
        String[] all = java.util.Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, all, a.length, b.length);
        return all;
    }

    // Proves --check-determinism holds for every new operation kind and every control event:
    // the thin example, whose stack offers them all, replays every seed with the same trace hash.
    @Test
    void everyOperationAndEventReplaysIdentically() {
        CommandRun r = run("check", "--config", "examples/thin.yaml", "--workload", EVERY_OP + ",events=reload:2,snap:1,crash:1",
                "--memory", "2MiB", "--faults", FAULTS, "--schedules", "3", "--check-determinism", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("determinism: every seed ran twice with the same trace hash"), r.out());
    }

    // Proves --export is repeatable and a read-only export is only read: the default stack's two
    // exports (origin and read-only snapshot) are driven in one run and both show in the header.
    @Test
    void severalExportsInOneRun() {
        CommandRun r = run("check", "--config", "src/main/resources/default-stack.yaml", "--export", "default", "--export", "snap",
                "--workload", EVERY_OP, "--memory", "2MiB", "--faults", FAULTS, "--schedules", "2", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("devices origin0, snap0 (read-only)"), r.out());
        assertTrue(r.out().contains("findings: 0"), r.out());
    }

    // Proves the reference model knows zero targets: the memory example's concat maps 64-96 MiB to
    // a zero target; writes there succeed and vanish, reads return zeros, and that is no mismatch.
    @Test
    void zeroTargetReadsZeros() {
        CommandRun r = run("check", "--config", "examples/memory-mix.yaml", "--export", "concat", "--workload",
                "tasks=2,ops=10,mix=write:50,read:50,size=4k-16k,region=64m-65m", "--memory", "2MiB", "--faults", FAULTS,
                "--schedules", "3", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("findings: 0"), r.out());
    }

    // Proves drop_writes is an expected mismatch only where it is configured: the first half of the
    // device is linear, the second a flakey target that is always down and drops writes; the
    // workload writes and reads both halves with no finding (the dropped half is not compared).
    @Test
    void flakeyDropWritesIsNotComparedElsewhereIs(@org.junit.jupiter.api.io.TempDir Path dir) throws Exception {
        Path yaml = dir.resolve("drop.yaml");
        Files.writeString(yaml, """
                devices:
                  m: { memory: 4MiB }
                mapped:
                  half: |
                    0 4096 linear m 0
                    4096 4096 flakey m 4096 0 1 1 drop_writes
                exports:
                  half: { device: half }
                """);
        CommandRun r = run("check", "--config", yaml.toString(), "--workload",
                "tasks=2,ops=12,mix=write:50,read:50,size=4k-16k,region=0-4m", "--memory", "1MiB", "--faults", "",
                "--schedules", "3", "--no-progress");
        assertEquals(ExitCodes.SUCCESS, r.exitCode(), r.out() + r.err());
        assertTrue(r.out().contains("findings: 0"), r.out());
    }

    // Proves the options are checked: --device and --export need --config, control events need a
    // --config stack, and an unknown export is a usage error naming it.
    @Test
    void exportsAndDevicesAreChecked() {
        CommandRun r = run("check", "--stack", "memory", "--export", "x", "--schedules", "1");
        assertEquals(ExitCodes.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains("--device and --export need --config"), r.err());
        r = run("check", "--stack", "memory", "--workload", "events=crash:1", "--schedules", "1");
        assertEquals(ExitCodes.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains("events (crash:1) need a --config stack"), r.err());
        r = run("check", "--config", "examples/thin.yaml", "--export", "nope", "--schedules", "1");
        assertEquals(ExitCodes.USAGE, r.exitCode(), r.out() + r.err());
        assertTrue(r.err().contains("'nope' is not an export"), r.err());
    }
}
