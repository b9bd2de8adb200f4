package io.blkstack.sim.workload;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.MemoryDevice;
import io.blkstack.scenario.BioSetSplitStack;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import io.blkstack.scenario.SplittingDevice;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Workload specs and the data check against the reference model, on the simulator. */
class WorkloadTest {

    private static final Workload.StackBuilder MEMORY = k -> new MemoryDevice(k, "mem0", 4L << 20, 50_000);
    private static final Workload.StackBuilder SPLIT_OVER_MEMORY =
            k -> new SplittingDevice(k, BioSetSplitStack.DEVICE, MEMORY.build(k), 8, 1, true);

    // Proves the one-line form parses every key, prints back to an equal spec, and that a
    // .workload file with "key: value" lines and comments reads the same.
    @Test
    void specParsesPrintsAndLoads(@TempDir Path dir) throws Exception {
        WorkloadSpec s = WorkloadSpec.parse("tasks=2,ops=5,mix=write:50,read:40,flush:10,size=4k-8k,region=1m-2m,"
                + "flushEvery=3,pressure=off,sparePages=2");
        assertEquals(new WorkloadSpec(2, 5, 50, 40, 10, 4096, 8192, 1 << 20, 2 << 20, 3, false, 2), s);
        assertEquals(s, WorkloadSpec.parse(s.toString()));
        Path file = dir.resolve("w.workload");
        Files.writeString(file, "# two tasks\ntasks: 2\nops: 5\nmix: write:50,read:40,flush:10\nsize=4k-8k\n"
                + "region: 1m-2m   # second MiB\nflushEvery: 3\npressure: off\nsparePages: 2\n");
        assertEquals(s, WorkloadSpec.fromArgument("@" + file));
        assertEquals(s, WorkloadSpec.fromArgument(file.toString()));
        assertEquals(WorkloadSpec.parse(WorkloadSpec.DEFAULT_TEXT), WorkloadSpec.defaults());
    }

    // Proves bad specs are rejected with the key and the value in the message.
    @Test
    void badSpecsNameKeyAndValue() {
        assertTrue(assertThrows(IllegalArgumentException.class, () -> WorkloadSpec.parse("mix=write:60,read:30"))
                .getMessage().contains("mix write:60,read:30,flush:0"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> WorkloadSpec.parse("tasks=0"))
                .getMessage().contains("tasks 0"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> WorkloadSpec.parse("colour=red"))
                .getMessage().contains("unknown key 'colour'"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> WorkloadSpec.parse("size=1000"))
                .getMessage().contains("size 1000"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> WorkloadSpec.parse("tasks=4,region=0-64k,size=32k"))
                .getMessage().contains("smaller than the largest operation"));
    }

    // Proves the data check passes on a correct stack under many interleavings and memory
    // pressure: a splitting device with a rescuer over a memory device, 30 random schedules, all
    // OK, with reads really compared (the workload reads after writing in its own slice).
    @Test
    void correctStackPassesDataCheck() {
        Workload w = new Workload(SPLIT_OVER_MEMORY, WorkloadSpec.parse("tasks=3,ops=10,mix=write:50,read:40,flush:10,"
                + "size=512-16k,region=0-192k,flushEvery=4"));
        SimRunner.CampaignResult c = new SimRunner(SimConfig.builder().memory(256 * 1024).faults("latency:mem0=0.5/200us")
                .build()).campaign(3, 30, true, false, w);
        assertTrue(c.findings().isEmpty(), c.firstFinding() == null ? "" : c.firstFinding().explanation());
        assertTrue(c.counters().get("mempool.reserve-used") > 0, "pressure reached the reserves: " + c.counters());
    }

    // Proves the data check catches corruption: a device that flips the first byte of every sector
    // on read is reported as DATA_MISMATCH within 10 schedules, naming the device and the offset.
    @Test
    void corruptingDeviceIsDataMismatch() {
        Workload w = new Workload(k -> new CorruptingDevice(k, "liar", 1 << 20),
                WorkloadSpec.parse("tasks=2,ops=12,mix=write:50,read:50,flush:0,size=4k-16k,region=0-64k"));
        SimRunner.CampaignResult c = new SimRunner(SimConfig.builder().build()).campaign(1, 10, true, false, w);
        SimResult r = c.firstFinding();
        assertNotNull(r, "no finding in " + c.schedules() + " schedules");
        assertEquals(Outcome.DATA_MISMATCH, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("data mismatch on liar"), r.explanation());
        assertTrue(r.explanation().matches("(?s).*byte at device offset \\d+ \\(sector \\d+\\) is 0x.*"), r.explanation());
    }

    // Proves a workload run is deterministic: the same seed gives the same trace hash twice, and
    // two different seeds give different traces (the workload's operations come from the run's stream).
    @Test
    void sameSeedSameTrace() {
        Workload w = new Workload(MEMORY, WorkloadSpec.parse("tasks=2,ops=6,size=4k-8k,region=0-64k"));
        SimConfig config = SimConfig.builder().faults("latency:mem0=0.5/200us").build();
        SimResult a = new SimRunner(config).runOnce(42, w);
        SimResult b = new SimRunner(config).runOnce(42, w);
        SimResult other = new SimRunner(config).runOnce(43, w);
        assertEquals(Outcome.OK, a.outcome(), a.explanation());
        assertEquals(a.traceHash(), b.traceHash());
        assertTrue(a.traceHash() != other.traceHash(), "seeds 42 and 43 gave the same trace");
    }
}
