package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioStatus;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.HungTaskWatchdog;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import io.blkstack.sim.Knot;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The hung-task watchdog on real threads explains a stall in production the way the checker
 * explains a finding: a writer stuck on a full thin pool (no_space_timeout=0) is reported with a
 * wait-for explanation that names the pool's out-of-data-space queue as the holder of its bio.
 */
class ThinWatchdogTest {

    // A task writes into a full pool that waits for ever; a watchdog with a 50 ms threshold and the
    // checker's explainer reports it. The report names the task, and its explanation names where the
    // write is: queued on thin-pool pool's out-of-data-space queue, with the pool's free blocks. The
    // listener signals the test (no sleeping, no polling); then a discard frees a block and the
    // write completes, so the kernel closes cleanly.
    @Test
    @Timeout(60)
    void aWriterStuckOnAFullPoolIsReportedWithThePoolAsHolder() throws Exception {
        Completion reported = new Completion("reported");
        AtomicReference<HungTaskWatchdog.Report> report = new AtomicReference<>();
        Kernel kernel = Kernel.builder().name("thin-watchdog").memory(8L << 20)
                .watchdog(Duration.ofMillis(50), r -> {
                    if (r.task().name().equals("writer") && report.compareAndSet(null, r)) {
                        reported.complete();
                    }
                })
                .watchdogExplainer(t -> Knot.explainWait(t.kernel(), t)).build();
        try (Kernel.Attachment self = kernel.attach("test");
                ThinNoSpaceTimeoutTest.SimPool p = new ThinNoSpaceTimeoutTest.SimPool(kernel, " 1 no_space_timeout=0")) {
            p.fill();
            BioStatus[] result = new BioStatus[1];
            Task writer = kernel.spawn("writer", TaskKind.USER, () -> result[0] = p.io.write(p.vol,
                    (long) ThinNoSpaceTimeoutTest.BLOCKS * ThinNoSpaceTimeoutTest.BLOCK, ThinTargetTest.pattern(5, 4096), 0));
            reported.await();
            String text = report.get().describe();
            System.out.print(text);
            assertSame(writer, report.get().task());
            assertTrue(text.contains("blocked for more than"), text);
            assertTrue(text.contains("queued on thin-pool pool's out-of-data-space queue (0 free of 4 data blocks"), text);
            assertTrue(text.contains("no_space_timeout=0: waits until blocks are freed"), text);
            assertEquals(BioStatus.OK, p.io.discard(p.vol, 0, ThinNoSpaceTimeoutTest.BLOCK));
            assertEquals(BioStatus.OK, p.io.flush(p.vol));
            kernel.scheduler().join(writer);
            assertEquals(BioStatus.OK, result[0]);
        } finally {
            kernel.close();
        }
    }
}
