package io.blkstack.dm.thin;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.BioFlags;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.Table;
import io.blkstack.dm.TableException;
import io.blkstack.dm.thin.ThinPoolTarget;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * thin-pool and thin through mapped devices over memory devices: reads, writes and discards
 * against a byte-array model; snapshots that stay independent of their origin both ways; deleting
 * a snapshot frees only unshared blocks; ENOSPC under error_if_no_space; status and table round
 * trips; block status reporting holes.
 */
class ThinTargetTest {

    static final int BLOCK = 16; // sectors: 8 KiB blocks, so 4 KiB writes are partial
    static final int THIN_SECTORS = 512; // 32 blocks
    static final int BLOCK_BYTES = BLOCK * 512;

    /** A kernel with a metadata and a data memory device, a pool device, and client I/O. */
    static final class Rig implements AutoCloseable {
        final TestKernel tk;
        final Map<String, BlockDevice> devices = new HashMap<>();
        final List<MappedDevice> mapped = new ArrayList<>();
        final BioSet client;
        final ThinIo io;
        MappedDevice pool;

        Rig(String name, long dataSectors, String features) throws TableException {
            tk = new TestKernel(name, 32L << 20, Policies.defaults(), Faults.NONE);
            devices.put("meta", new MemoryDevice(tk.kernel, "meta", 1L << 20, 0));
            devices.put("data", new MemoryDevice(tk.kernel, "data", dataSectors * 512, 0));
            client = new BioSet(tk.kernel, "client", 4, 4, null, false);
            io = new ThinIo(tk.kernel, client);
            pool = map("pool", "0 " + dataSectors + " thin-pool meta data " + BLOCK + " 4" + features);
        }

        MappedDevice map(String name, String table) throws TableException {
            MappedDevice md = new MappedDevice(tk.kernel, name, Table.parse(tk.kernel, name, table, devices::get));
            devices.put(name, md);
            mapped.add(md);
            return md;
        }

        MappedDevice thin(String name, long id) throws TableException {
            pool.message(0, "create_thin", Long.toString(id));
            return map(name, "0 " + THIN_SECTORS + " thin pool " + id);
        }

        void unmap(MappedDevice md) {
            mapped.remove(md);
            devices.remove(md.name());
            md.close();
        }

        Pool poolRuntime() {
            return ((ThinPoolTarget) pool.table().target(0)).pool();
        }

        byte[] read(BlockDevice dev, long sector, int bytes) {
            byte[] b = new byte[bytes];
            assertEquals(BioStatus.OK, io.read(dev, sector, b));
            return b;
        }

        @Override
        public void close() {
            for (int i = mapped.size() - 1; i >= 0; i--) {
                mapped.get(i).close();
            }
            client.close();
            for (BlockDevice d : List.of(devices.get("data"), devices.get("meta"))) {
                d.close();
            }
            tk.close();
        }
    }

    static byte[] pattern(long seed, int bytes) {
        byte[] b = new byte[bytes];
        new Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void readsWritesAndDiscardsMatchTheModel() throws Exception {
        try (Rig rig = new Rig("thin-model", 4096, "")) {
            MappedDevice a = rig.thin("a", 1);
            MappedDevice b = rig.thin("b", 2);
            Map<MappedDevice, byte[]> model = Map.of(a, new byte[THIN_SECTORS * 512], b, new byte[THIN_SECTORS * 512]);
            Random r = new Random(42);
            for (int op = 0; op < 400; op++) {
                MappedDevice dev = r.nextBoolean() ? a : b;
                byte[] m = model.get(dev);
                int sector = r.nextInt(THIN_SECTORS / 8) * 8;
                int sectors = Math.min(THIN_SECTORS - sector, 8 * (1 + r.nextInt(6)));
                int kind = r.nextInt(10);
                if (kind < 5) {
                    byte[] data = pattern(op, sectors * 512);
                    assertEquals(BioStatus.OK, rig.io.write(dev, sector, data, r.nextInt(8) == 0 ? BioFlags.FUA : 0));
                    System.arraycopy(data, 0, m, sector * 512, data.length);
                } else if (kind < 8) {
                    byte[] got = rig.read(dev, sector, sectors * 512);
                    byte[] want = java.util.Arrays.copyOfRange(m, sector * 512, (sector + sectors) * 512);
                    assertArrayEquals(want, got, "op " + op + " read " + dev.name() + " at " + sector);
                } else if (kind < 9) {
                    assertEquals(BioStatus.OK, rig.io.discard(dev, sector, sectors));
                    // Whole blocks inside the range are unmapped (zeros); partial ones keep their data.
                    long first = (sector + BLOCK - 1) / BLOCK;
                    long end = (sector + sectors) / BLOCK;
                    for (long blk = first; blk < end; blk++) {
                        java.util.Arrays.fill(m, (int) (blk * BLOCK_BYTES), (int) ((blk + 1) * BLOCK_BYTES), (byte) 0);
                    }
                } else {
                    assertEquals(BioStatus.OK, rig.io.flush(dev));
                }
            }
            for (MappedDevice dev : List.of(a, b)) {
                assertArrayEquals(model.get(dev), rig.read(dev, 0, THIN_SECTORS * 512), dev.name());
            }
            rig.poolRuntime().drain();
            assertEquals(List.of(), rig.poolRuntime().check());
        }
    }

    @Test
    void snapshotsStayIndependentAndDeleteFreesOnlyUnsharedBlocks() throws Exception {
        try (Rig rig = new Rig("thin-snap", 4096, "")) {
            MappedDevice origin = rig.thin("origin", 1);
            byte[] before = pattern(1, THIN_SECTORS * 512);
            // Leave the last four blocks unprovisioned.
            assertEquals(BioStatus.OK, rig.io.write(origin, 0, java.util.Arrays.copyOf(before, (THIN_SECTORS - 4 * BLOCK) * 512), 0));
            java.util.Arrays.fill(before, (THIN_SECTORS - 4 * BLOCK) * 512, before.length, (byte) 0);
            Pool pool = rig.poolRuntime();
            long usedBefore = pool.metadata().usedDataBlocks();
            assertEquals(28, usedBefore);
            rig.pool.message(0, "create_snap", "2", "1");
            MappedDevice snap = rig.map("snap", "0 " + THIN_SECTORS + " thin pool 2");
            assertArrayEquals(before, rig.read(snap, 0, THIN_SECTORS * 512));
            assertEquals(usedBefore, pool.metadata().usedDataBlocks(), "a snapshot shares every block");

            // Origin writes (partial and whole blocks) leave the snapshot unchanged.
            byte[] originNow = before.clone();
            byte[] w1 = pattern(2, 4096);
            rig.io.write(origin, 8, w1, 0);
            System.arraycopy(w1, 0, originNow, 8 * 512, w1.length);
            byte[] w2 = pattern(3, BLOCK_BYTES);
            rig.io.write(origin, 5 * BLOCK, w2, 0);
            System.arraycopy(w2, 0, originNow, 5 * BLOCK * 512, w2.length);
            assertArrayEquals(before, rig.read(snap, 0, THIN_SECTORS * 512), "snapshot after origin writes");
            assertArrayEquals(originNow, rig.read(origin, 0, THIN_SECTORS * 512), "origin after its writes");

            // Snapshot writes leave the origin unchanged.
            byte[] snapNow = before.clone();
            byte[] w3 = pattern(4, 4096);
            rig.io.write(snap, 10 * BLOCK + 8, w3, 0);
            System.arraycopy(w3, 0, snapNow, (10 * BLOCK + 8) * 512, w3.length);
            assertArrayEquals(originNow, rig.read(origin, 0, THIN_SECTORS * 512), "origin after snapshot writes");
            assertArrayEquals(snapNow, rig.read(snap, 0, THIN_SECTORS * 512), "snapshot after its writes");

            pool.drain();
            assertEquals(List.of(), pool.check());
            long used = pool.metadata().usedDataBlocks();
            assertEquals(usedBefore + 3, used, "two origin blocks and one snapshot block were copied");
            // Deleting the snapshot frees the blocks only it references (its copy of block 10 and the
            // pre-write blocks 0 and 5, which the origin replaced); the 25 shared blocks stay.
            rig.unmap(snap);
            assertThrows(IllegalArgumentException.class, () -> rig.pool.message(0, "delete", "1"), "open origin");
            rig.pool.message(0, "delete", "2");
            assertEquals(usedBefore, pool.metadata().usedDataBlocks());
            assertArrayEquals(originNow, rig.read(origin, 0, THIN_SECTORS * 512), "origin after deleting the snapshot");
            assertEquals(List.of(), pool.check());
        }
    }

    @Test
    void outOfSpaceFailsWithNospcUnderErrorIfNoSpace() throws Exception {
        try (Rig rig = new Rig("thin-nospc", 4 * BLOCK, " 1 error_if_no_space")) {
            MappedDevice a = rig.thin("a", 1);
            for (int blk = 0; blk < 4; blk++) {
                assertEquals(BioStatus.OK, rig.io.write(a, blk * BLOCK, pattern(blk, 4096), 0));
            }
            assertEquals(BioStatus.NOSPC, rig.io.write(a, 4 * BLOCK, pattern(9, 4096), 0));
            assertTrue(rig.pool.status(StatusForm.INFO).get(0).contains("out_of_data_space"), rig.pool.status(StatusForm.INFO).toString());
            assertTrue(rig.poolRuntime().belowLowWater());
            // Writes to provisioned blocks still work; a discard and a commit give space back.
            assertEquals(BioStatus.OK, rig.io.write(a, 8, pattern(10, 4096), 0));
            assertEquals(BioStatus.OK, rig.io.discard(a, 0, BLOCK));
            assertEquals(BioStatus.OK, rig.io.flush(a));
            assertEquals(BioStatus.OK, rig.io.write(a, 4 * BLOCK, pattern(9, 4096), 0));
            assertEquals(List.of(), rig.poolRuntime().check());
        }
    }

    @Test
    void statusAndTableRoundTrip() throws Exception {
        try (Rig rig = new Rig("thin-status", 4096, " 2 skip_block_zeroing ignore_discard")) {
            assertEquals(List.of("0 4096 thin-pool meta data 16 4 2 skip_block_zeroing ignore_discard"),
                    rig.pool.status(StatusForm.TABLE));
            MappedDevice a = rig.map("a", "0 " + THIN_SECTORS + " thin pool 7");
            assertEquals(List.of("0 512 thin pool 7"), a.status(StatusForm.TABLE));
            MappedDevice s = rig.map("s", "0 " + THIN_SECTORS + " thin pool 8 snap_of=7");
            assertEquals(List.of("0 512 thin pool 8 snap_of=7"), s.status(StatusForm.TABLE));
            rig.io.write(a, 0, pattern(1, 4096), BioFlags.FUA);
            String info = rig.pool.status(StatusForm.INFO).get(0);
            assertTrue(info.matches("0 4096 thin-pool \\d+ \\d+/256 1/256 - rw ignore_discard queue_if_no_space - -"), info);
            assertEquals(List.of("0 512 thin 16 15"), a.status(StatusForm.INFO));
            // The table text rebuilds an equal target.
            Table again = Table.parse(rig.tk.kernel, "a2", "0 512 thin pool 7", rig.devices::get);
            assertEquals("pool 7", again.target(0).statusTable());
            again.close();
            assertThrows(TableException.class, () -> Table.parse(rig.tk.kernel, "x", "0 512 thin meta 1", rig.devices::get));
            assertThrows(TableException.class, () -> Table.parse(rig.tk.kernel, "x",
                    "0 4096 thin-pool meta data 12 4", rig.devices::get));
            assertThrows(IllegalArgumentException.class, () -> rig.pool.message(0, "create_thin", "7"));
            assertThrows(IllegalArgumentException.class, () -> rig.pool.message(0, "frobnicate"));
            assertEquals(BioStatus.IOERR, rig.io.write(rig.pool, 0, pattern(1, 4096), 0), "the pool device takes no data I/O");
        }
    }

    @Test
    void blockStatusReportsHoles() throws Exception {
        try (Rig rig = new Rig("thin-holes", 4096, "")) {
            MappedDevice a = rig.thin("a", 1);
            assertTrue(a.knowsAllocation());
            assertEquals(-THIN_SECTORS, a.allocatedExtent(0, THIN_SECTORS));
            rig.io.write(a, 2 * BLOCK + 8, pattern(1, 4096), 0);
            rig.io.write(a, 3 * BLOCK, pattern(2, 4096), 0);
            assertEquals(-2 * BLOCK, a.allocatedExtent(0, THIN_SECTORS));
            assertEquals(2 * BLOCK, a.allocatedExtent(2 * BLOCK, THIN_SECTORS));
            assertEquals(2 * BLOCK - 4, a.allocatedExtent(2 * BLOCK + 4, THIN_SECTORS - 2 * BLOCK - 4));
            assertEquals(-(THIN_SECTORS - 4 * BLOCK), a.allocatedExtent(4 * BLOCK, THIN_SECTORS - 4 * BLOCK));
            byte[] hole = rig.read(a, 0, BLOCK_BYTES);
            assertArrayEquals(new byte[BLOCK_BYTES], hole);
            byte[] partial = rig.read(a, 2 * BLOCK, BLOCK_BYTES);
            byte[] want = new byte[BLOCK_BYTES];
            System.arraycopy(pattern(1, 4096), 0, want, 4096, 4096);
            assertArrayEquals(want, partial, "the rest of a provisioned block is zeroed");
        }
    }
}
