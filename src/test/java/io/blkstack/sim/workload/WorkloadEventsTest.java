package io.blkstack.sim.workload;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.sim.Outcome;
import io.blkstack.sim.SimConfig;
import io.blkstack.sim.SimResult;
import io.blkstack.sim.SimRunner;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The new operation kinds and control events of a workload: spec syntax, and that the crash check can fail. */
class WorkloadEventsTest {

    /** A stack of one memory device whose restart keeps the device, or replaces it with an empty one (losing everything). */
    private static Workload.DrivenStackBuilder restartable(boolean loseEverything) {
        return kernel -> new DrivenStack() {
            private BlockDevice dev = new MemoryDevice(kernel, "mem0", 1 << 20, 20_000);

            @Override
            public List<BlockDevice> devices() {
                return List.of(dev);
            }

            @Override
            public boolean canRestart() {
                return true;
            }

            @Override
            public List<String> crashAndRestart() {
                if (loseEverything) {
                    dev.close();
                    dev = new MemoryDevice(kernel, "mem0", 1 << 20, 20_000);
                }
                return List.of();
            }
        };
    }

    private static final String WRITE_AND_FLUSH = "tasks=2,ops=12,mix=write:60,read:20,flush:20,size=4k-8k,region=0-64k,"
            + "flushEvery=2,pressure=off,events=crash:2";

    // Proves the new keys parse and print back: every operation of the mix, and the events.
    @Test
    void everyOperationAndEventParsesAndPrintsBack() {
        WorkloadSpec s = WorkloadSpec.parse("mix=write:30,read:30,flush:10,fua:10,discard:8,zeroes:6,zeroes-nohole:6,"
                + "events=crash:1,reload:2,snap:3");
        assertEquals(10, s.fuaPercent());
        assertEquals(8, s.discardPercent());
        assertEquals(6, s.zeroesPercent());
        assertEquals(6, s.zeroesNoHolePercent());
        assertEquals(new WorkloadSpec.Events(2, 3, 1), s.events());
        assertEquals(s, WorkloadSpec.parse(s.toString()));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> WorkloadSpec.parse("events=boom:1"))
                .getMessage().contains("bad event 'boom'"));
        assertTrue(assertThrows(IllegalArgumentException.class, () -> WorkloadSpec.parse("mix=write:50,trim:50"))
                .getMessage().contains("bad mix operation 'trim'"));
    }

    // Proves the crash check holds a stack to what it flushed: a restart that keeps the device
    // passes 10 schedules; a restart that loses everything (flushed writes included) is a
    // DATA_MISMATCH found at the read-back after the restart.
    @Test
    void lostFlushedWritesAreFoundAfterRestart() {
        SimRunner runner = new SimRunner(SimConfig.builder().memory(1 << 20).faults("latency:mem0=0.5/100us").build());
        SimRunner.CampaignResult kept = runner.campaign(5, 10, true, false,
                Workload.driving(restartable(false), WorkloadSpec.parse(WRITE_AND_FLUSH)));
        assertTrue(kept.findings().isEmpty(), kept.firstFinding() == null ? "" : kept.firstFinding().explanation());
        assertEquals(20, kept.counters().get("workload.restarts"));
        SimRunner.CampaignResult lost = runner.campaign(5, 10, true, false,
                Workload.driving(restartable(true), WorkloadSpec.parse(WRITE_AND_FLUSH)));
        SimResult r = lost.firstFinding();
        assertNotNull(r, "no finding in " + lost.schedules() + " schedules");
        assertEquals(Outcome.DATA_MISMATCH, r.outcome(), r.explanation());
        assertTrue(r.explanation().contains("after a crash and restart, the read-back"), r.explanation());
    }

    // Proves events the stack cannot offer are refused, naming what is missing.
    @Test
    void eventsNeedAStackThatOffersThem() {
        Workload w = new Workload(k -> new MemoryDevice(k, "mem0", 1 << 20, 0), WorkloadSpec.parse("events=reload:1"));
        SimResult r = new SimRunner(SimConfig.builder().build()).runOnce(1, w);
        assertEquals(Outcome.CRASH, r.outcome());
        assertTrue(r.explanation().contains("reload events need a stack with mapped devices"), r.explanation());
    }
}
