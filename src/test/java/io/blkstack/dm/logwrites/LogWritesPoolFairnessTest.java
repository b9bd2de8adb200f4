package io.blkstack.dm.logwrites;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;

import io.blkstack.bio.BioStatus;
import io.blkstack.block.HoldingDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.TargetBench;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The log-writes pool serves waiting mappers in arrival order: a small write that arrives while a
 * large one waits for pages queues behind it, even when the pages it needs are free. Before, every
 * waiter was woken and whoever came first took the pages, so with small and large writes mixed a
 * large one could wait for seconds (the 30-minute soak at a 4 MiB arena saw 6-12 s per client).
 */
class LogWritesPoolFairnessTest {

    private static final long TEN_SECONDS = 10_000_000_000L;
    private static final int DATA_SECTORS = 8192;
    private static final int PAGE_SECTORS = 8;

    private static byte[] pattern(int pages, int seed) {
        byte[] b = new byte[pages * 4096];
        Arrays.fill(b, (byte) seed);
        return b;
    }

    @Test
    void aSmallWriteDoesNotPassALargeOneWaitingForThePool() throws Exception {
        try (TestKernel tk = new TestKernel("log-fair", 64L << 20, Policies.defaults(), Faults.NONE);
                TargetBench b = new TargetBench(tk.kernel)) {
            b.bottom("a", DATA_SECTORS);
            HoldingDevice gate = b.add("log", new HoldingDevice(tk.kernel, "log", 1L << 20, false));
            MappedDevice md = b.mapped("0 " + DATA_SECTORS + " log-writes a log\n");
            ((LogWritesTarget) md.table().target(0)).sync();
            gate.hold();
            try {
                fillThenRace(b, gate, md);
            } finally {
                gate.openAll(); // a failed claim must not leave the log held at teardown
            }
        }
    }

    private static void fillThenRace(TargetBench b, HoldingDevice gate, MappedDevice md) {
        Kernel kernel = b.kernel;
        int half = LogWritesTarget.POOL_PAGES / 2;
        // Fill the pool: each write completes, its copy waits for the log (held by the gate).
        assertEquals(BioStatus.OK, b.write(md, 0, pattern(half / 2, 1), 0));
        assertEquals(BioStatus.OK, b.write(md, (long) half / 2 * PAGE_SECTORS, pattern(half / 2, 2), 0));
        assertEquals(BioStatus.OK, b.write(md, (long) half * PAGE_SECTORS, pattern(half, 3), 0));
        gate.awaitHeld(1); // the writer is on the first entry

        List<String> order = new ArrayList<>();
        SpinLock orderLock = new SpinLock("order");
        Completion largeDone = new Completion("large done");
        Completion smallDone = new Completion("small done");
        byte[] large = pattern(half, 4);
        byte[] small = pattern(1, 5);
        long largeSector = 2L * half * PAGE_SECTORS;
        long smallSector = 3L * half * PAGE_SECTORS;
        Task largeWriter = kernel.spawn("large", TaskKind.USER, () -> {
            expectOk(b.write(md, largeSector, large, 0));
            orderLock.lock();
            order.add("large");
            orderLock.unlock();
            largeDone.complete();
        });
        assertNotNull(largeWriter.awaitWait(w -> w.toString().startsWith("log-writes pool"), TEN_SECONDS),
                "the large write never waited for the pool");

        // The first entry is logged: a quarter of the pool is free, less than the large write needs.
        gate.releaseOne();
        gate.awaitHeld(1); // the writer has given the first entry's pages back and is on the second

        Task smallWriter = kernel.spawn("small", TaskKind.USER, () -> {
            expectOk(b.write(md, smallSector, small, 0));
            orderLock.lock();
            order.add("small");
            orderLock.unlock();
            smallDone.complete();
        });
        assertNotNull(smallWriter.awaitWait(w -> w.toString().startsWith("log-writes pool"), TEN_SECONDS),
                "the small write took free pages ahead of the large one that waits (order: " + order + ")");

        // The second entry is logged: half the pool is free, exactly what the large write needs. It
        // takes all of it, so the small one waits on until the third entry (still held) is logged.
        gate.releaseOne();
        largeDone.await();
        orderLock.lock();
        List<String> afterLarge = List.copyOf(order);
        orderLock.unlock();
        assertEquals(List.of("large"), afterLarge, "the small write took pages the large one was served");
        gate.openAll();
        smallDone.await();
        assertEquals(List.of("large", "small"), order);
        byte[] back = new byte[large.length];
        assertEquals(BioStatus.OK, b.read(md, largeSector, back));
        assertArrayEquals(large, back);
        ((LogWritesTarget) md.table().target(0)).sync();
    }

    private static void expectOk(BioStatus status) {
        if (status != BioStatus.OK) {
            throw new IllegalStateException("write ended " + status);
        }
    }
}
