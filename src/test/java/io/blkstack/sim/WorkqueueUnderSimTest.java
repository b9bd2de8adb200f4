package io.blkstack.sim;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.wq.Work;
import io.blkstack.wq.Workqueue;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** Real kernel components (workqueues, workers, rescuers, mayday timers) run unchanged under the simulator. */
class WorkqueueUnderSimTest {

    // Proves the engine carries a real component: a MEM_RECLAIM workqueue runs six items and is
    // flushed and closed inside the simulation, with worker creation failing 70% of the time (so
    // the rescuer and mayday timers are exercised), in 50 schedules that each replay to the same hash.
    @Test
    void workqueueRunsDeterministicallyWithWorkerCreationFaults() {
        SimRunner runner = new SimRunner(SimConfig.builder().faults("worker-create=0.7").build());
        SimRunner.CampaignResult c = runner.campaign(3, 50, false, true, k -> {
            Workqueue wq = Workqueue.create(k, "test", Workqueue.MEM_RECLAIM, 2);
            AtomicInteger ran = new AtomicInteger();
            for (int i = 0; i < 6; i++) {
                wq.queue(new Work("w" + i, ran::incrementAndGet));
            }
            wq.flush();
            if (ran.get() != 6) {
                throw new IllegalStateException("flush returned after " + ran.get() + " of 6 items");
            }
        });
        assertTrue(c.findings().isEmpty(), c.firstFinding() == null ? "" : c.firstFinding().explanation());
        assertTrue(c.nondeterministicSeeds().isEmpty(), "seeds that did not replay: " + c.nondeterministicSeeds());
        assertEquals(50, c.schedules());
        assertTrue(c.faultFires().getOrDefault("worker-create", 0L) > 0, "the fault site never fired: " + c.faultFires());
    }
}
