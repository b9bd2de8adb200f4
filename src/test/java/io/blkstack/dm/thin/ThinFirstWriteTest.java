package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.thin.ThinTargetTest.Rig;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.TaskKind;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;

/**
 * First writes to a thin volume whose data device is full of garbage (a block a new volume gets
 * may have held anything): a write that covers a new block completely zeroes nothing, a partial
 * one zeroes exactly the parts it does not cover, and every read returns the written data with
 * zeros everywhere else, for first writes of every shape, FUA among them, and from several tasks
 * at once.
 */
class ThinFirstWriteTest {

    private static final int BLOCK = ThinTargetTest.BLOCK;
    private static final int DATA_SECTORS = 4096;

    /** Fills the whole data device with random bytes, as blocks freed by another volume would be. */
    private static void fillWithGarbage(Rig rig, Random r) {
        BlockDevice data = rig.devices.get("data");
        for (int at = 0; at < DATA_SECTORS; at += 256) {
            assertEquals(BioStatus.OK, rig.io.write(data, at, ThinTargetTest.pattern(r.nextLong(), 256 * 512), 0));
        }
    }

    private static long zeroedSectors(Rig rig) {
        return rig.devices.get("data").stats().snapshot().sectors(BioOp.WRITE_ZEROES);
    }

    /**
     * Proves the overwrite optimisation and its complement: first writes of every shape (the head,
     * the tail or the middle of a block, one sector, a whole block, runs over partial and whole
     * blocks, a FUA write) zero exactly the sectors of their new blocks they leave out (counted on
     * the data device), reads show zeros there despite the garbage, and overwrites of provisioned
     * blocks zero nothing more.
     */
    @Test
    void firstWritesZeroExactlyWhatTheyLeaveOut() throws Exception {
        try (Rig rig = new Rig("thin-first-writes", DATA_SECTORS, "")) {
            Random r = new Random(51);
            fillWithGarbage(rig, r);
            MappedDevice a = rig.thin("a", 1);
            byte[] model = new byte[ThinTargetTest.THIN_SECTORS * 512];
            // {sector, sectors, flags, sectors of new blocks left out}
            int[][] shapes = {
                {0, 4, 0, 12},                     // head of block 0
                {BLOCK + 12, 4, 0, 12},            // tail of block 1
                {2 * BLOCK + 5, 3, 0, 13},         // middle of block 2
                {3 * BLOCK, BLOCK, 0, 0},          // all of block 3
                {5 * BLOCK + 6, 3 * BLOCK, 0, 16}, // end of 5, all of 6 and 7, start of 8
                {10 * BLOCK + 15, 1, 0, 15},       // the last sector of block 10
                {12 * BLOCK, 2 * BLOCK, 0, 0},     // blocks 12 and 13 whole
                {15 * BLOCK + 3, 2, BioFlags.FUA, 14}, // a FUA write into block 15
            };
            long before = zeroedSectors(rig);
            long leftOut = 0;
            for (int[] s : shapes) {
                byte[] data = ThinTargetTest.pattern(r.nextLong(), s[1] * 512);
                assertEquals(BioStatus.OK, rig.io.write(a, s[0], data, s[2]), "write " + s[0] + "+" + s[1]);
                System.arraycopy(data, 0, model, s[0] * 512, data.length);
                leftOut += s[3];
            }
            assertEquals(leftOut, zeroedSectors(rig) - before, "sectors zeroed on the data device");
            assertArrayEquals(model, rig.read(a, 0, model.length), "the volume after first writes");
            long afterFirst = zeroedSectors(rig);
            for (int[] s : shapes) {
                byte[] data = ThinTargetTest.pattern(r.nextLong(), 512);
                assertEquals(BioStatus.OK, rig.io.write(a, s[0], data, 0), "overwrite at " + s[0]);
                System.arraycopy(data, 0, model, s[0] * 512, data.length);
            }
            assertEquals(afterFirst, zeroedSectors(rig), "overwrites of provisioned blocks zero nothing");
            assertArrayEquals(model, rig.read(a, 0, model.length), "the volume after overwrites");
            rig.poolRuntime().drain();
            assertEquals(List.of(), rig.poolRuntime().check());
        }
    }

    /**
     * Proves partial first writes from four tasks at once (each to blocks of its own, so the pool's
     * worker has zeroing and data writes of many blocks in flight together and completes them in
     * batches) leave every block as written with zeros around.
     */
    @Test
    void concurrentPartialFirstWritesReadBackWithZerosAround() throws Exception {
        try (Rig rig = new Rig("thin-first-concurrent", DATA_SECTORS, "")) {
            fillWithGarbage(rig, new Random(52));
            MappedDevice a = rig.thin("a", 1);
            byte[] model = new byte[ThinTargetTest.THIN_SECTORS * 512];
            int tasks = 4;
            int blocksPerTask = ThinTargetTest.THIN_SECTORS / BLOCK / tasks;
            Completion[] done = new Completion[tasks];
            AtomicReference<Throwable> failure = new AtomicReference<>();
            for (int t = 0; t < tasks; t++) {
                int id = t;
                done[t] = new Completion("writer " + t);
                byte[][] writes = new byte[blocksPerTask][];
                int[] sectors = new int[blocksPerTask];
                Random r = new Random(60 + t);
                for (int i = 0; i < blocksPerTask; i++) {
                    int block = i * tasks + id;
                    int length = 1 + r.nextInt(BLOCK - 1);
                    sectors[i] = block * BLOCK + r.nextInt(BLOCK - length + 1);
                    writes[i] = ThinTargetTest.pattern(r.nextLong(), length * 512);
                    System.arraycopy(writes[i], 0, model, sectors[i] * 512, writes[i].length);
                }
                Completion mine = done[t];
                rig.tk.kernel.spawn("thin-writer-" + t, TaskKind.USER, () -> {
                    try {
                        for (int i = 0; i < blocksPerTask; i++) {
                            BioStatus s = rig.io.write(a, sectors[i], writes[i], 0);
                            if (s != BioStatus.OK) {
                                throw new IllegalStateException("writer " + id + " got " + s);
                            }
                        }
                    } catch (Throwable e) {
                        failure.compareAndSet(null, e);
                    } finally {
                        mine.complete();
                    }
                });
            }
            for (Completion c : done) {
                c.await();
            }
            if (failure.get() != null) {
                throw new AssertionError(failure.get());
            }
            assertArrayEquals(model, rig.read(a, 0, model.length), "the volume after concurrent first writes");
            rig.poolRuntime().drain();
            assertEquals(List.of(), rig.poolRuntime().check());
        }
    }
}
