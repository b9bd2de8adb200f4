package io.blkstack.dm.simple;

import io.blkstack.dm.TargetBench;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioStatus;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.StatusForm;
import io.blkstack.dm.TableException;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * dm-flakey as documented. The phase needs no waiting: {@code up 0 down 1} is always down and
 * {@code up 1 down 0} always up ({@code elapsed % (up + down) >= up}).
 */
class FlakeyTargetTest {

    private static final String DOWN = " 16 0 1";
    private static final String UP = " 16 1 0";

    private TestKernel tk;
    private TargetBench bench;
    private TargetBench.Bottom a;

    private void open(String name) {
        tk = new TestKernel(name, 32L << 20, Policies.defaults(), Faults.NONE);
        bench = new TargetBench(tk.kernel);
        a = bench.bottom("a", 1024);
    }

    private void close() {
        bench.close();
        tk.close();
    }

    private static byte[] random(int sectors, long seed) {
        byte[] d = new byte[sectors * Bio.SECTOR_SIZE];
        new Random(seed).nextBytes(d);
        return d;
    }

    private byte[] onDevice(long sector, int bytes) {
        int off = (int) (sector * 512);
        return Arrays.copyOfRange(a.data, off, off + bytes);
    }

    @Test
    void tableRoundTripsWithFeaturesInOrder() throws TableException {
        open("flakey-table");
        try {
            for (String line : List.of("0 512 flakey a 0 5 7", "0 512 flakey a 8 0 1 0", "0 512 flakey a 0 1 1 1 drop_writes",
                    "0 512 flakey a 0 3 4 2 error_reads error_writes",
                    "0 512 flakey a 0 1 1 6 error_reads corrupt_bio_byte 32 r 1 0",
                    "0 512 flakey a 0 1 1 5 corrupt_bio_byte 224 w 0 1")) {
                try (var t = bench.table(line + "\n")) {
                    assertEquals(List.of(line), t.lines());
                }
            }
        } finally {
            close();
        }
    }

    @Test
    void badFeaturesAreRefusedNamingTheArgument() {
        open("flakey-bad");
        try {
            String[][] cases = {
                {"0 512 flakey a 0 0 0", "both 0"},
                {"0 512 flakey a 0 1 1 2 drop_writes error_writes", "conflicts"},
                {"0 512 flakey a 0 1 1 2 drop_writes drop_writes", "duplicates"},
                {"0 512 flakey a 0 1 1 4 corrupt_bio_byte 1 w 0", "needs 4"},
                {"0 512 flakey a 0 1 1 6 drop_writes corrupt_bio_byte 1 w 0 0", "incompatible"},
                {"0 512 flakey a 0 1 1 5 corrupt_bio_byte 1 x 0 0", "direction"},
                {"0 512 flakey a 0 1 1 5 corrupt_bio_byte 1 r 256 0", "0..255"},
                {"0 512 flakey a 0 1 1 1 sometimes", "'sometimes'"},
                {"0 512 flakey a 0 1 1 3 error_reads", "announces 3"},
            };
            for (String[] c : cases) {
                TableException e = assertThrows(TableException.class, () -> bench.table(c[0] + "\n"), c[0]);
                assertTrue(e.getMessage().contains(c[1]), c[0] + " -> " + e.getMessage());
            }
        } finally {
            close();
        }
    }

    @Test
    void upIntervalPassesEverythingThrough() throws TableException {
        open("flakey-up");
        try {
            MappedDevice md = bench.mapped("0 256 flakey a" + UP + "\n");
            byte[] data = random(5, 1);
            assertEquals(BioStatus.OK, bench.write(md, 3, data, 0));
            assertArrayEquals(data, onDevice(19, data.length));
            byte[] back = new byte[data.length];
            assertEquals(BioStatus.OK, bench.read(md, 3, back));
            assertArrayEquals(data, back);
            assertEquals(BioStatus.OK, bench.flush(md, 0));
            assertEquals("a:FLUSH:0+0", bench.logSnapshot().get(bench.logSnapshot().size() - 1));
        } finally {
            close();
        }
    }

    @Test
    void downIntervalWithoutFeaturesFailsAllIo() throws TableException {
        open("flakey-down");
        try {
            MappedDevice md = bench.mapped("0 256 flakey a" + DOWN + "\n");
            assertEquals(BioStatus.IOERR, bench.write(md, 3, random(2, 2), 0));
            assertEquals(BioStatus.IOERR, bench.read(md, 3, new byte[512]));
            assertEquals(BioStatus.IOERR, bench.flush(md, 0));
            assertTrue(bench.logSnapshot().isEmpty(), bench.logSnapshot().toString());
            assertEquals(List.of("0 256 flakey 3 0 0"), md.status(StatusForm.INFO));
        } finally {
            close();
        }
    }

    @Test
    void errorReadsFailsReadsOnly() throws TableException {
        open("flakey-error-reads");
        try {
            MappedDevice md = bench.mapped("0 256 flakey a" + DOWN + " 1 error_reads\n");
            byte[] data = random(2, 3);
            assertEquals(BioStatus.OK, bench.write(md, 0, data, 0));
            assertArrayEquals(data, onDevice(16, data.length));
            assertEquals(BioStatus.IOERR, bench.read(md, 0, new byte[1024]));
        } finally {
            close();
        }
    }

    @Test
    void dropWritesAcknowledgesButNeverWrites() throws TableException {
        open("flakey-drop");
        try {
            byte[] before = random(4, 4);
            System.arraycopy(before, 0, a.data, 16 * 512, before.length);
            MappedDevice md = bench.mapped("0 256 flakey a" + DOWN + " 1 drop_writes\n");
            assertEquals(BioStatus.OK, bench.write(md, 0, random(4, 5), 0));
            assertArrayEquals(before, onDevice(16, before.length), "a dropped write changed the device");
            byte[] back = new byte[before.length];
            assertEquals(BioStatus.OK, bench.read(md, 0, back));
            assertArrayEquals(before, back);
            assertEquals(BioStatus.OK, bench.flush(md, 0));
            assertFalse(bench.logSnapshot().stream().anyMatch(e -> e.contains("WRITE") || e.contains("FLUSH")),
                    bench.logSnapshot().toString());
            assertEquals(List.of("0 256 flakey 0 2 0"), md.status(StatusForm.INFO));
        } finally {
            close();
        }
    }

    @Test
    void errorWritesFailsWritesAndReadsWork() throws TableException {
        open("flakey-error-writes");
        try {
            byte[] before = random(2, 6);
            System.arraycopy(before, 0, a.data, 20 * 512, before.length);
            MappedDevice md = bench.mapped("0 256 flakey a" + DOWN + " 1 error_writes\n");
            assertEquals(BioStatus.IOERR, bench.write(md, 4, random(2, 7), 0));
            assertArrayEquals(before, onDevice(20, before.length));
            byte[] back = new byte[before.length];
            assertEquals(BioStatus.OK, bench.read(md, 4, back));
            assertArrayEquals(before, back);
        } finally {
            close();
        }
    }

    @Test
    void corruptBioByteOnReadsChangesOnlyTheReturnedByte() throws TableException {
        open("flakey-corrupt-r");
        try {
            byte[] data = random(3, 8);
            data[31] = 0;
            System.arraycopy(data, 0, a.data, 16 * 512, data.length);
            MappedDevice md = bench.mapped("0 256 flakey a" + DOWN + " 5 corrupt_bio_byte 32 r 1 0\n");
            byte[] back = new byte[data.length];
            assertEquals(BioStatus.OK, bench.read(md, 0, back));
            byte[] expected = data.clone();
            expected[31] = 1;
            assertArrayEquals(expected, back);
            assertArrayEquals(data, onDevice(16, data.length), "the device itself is untouched");
            // Writes pass through untouched under an 'r' corruption.
            byte[] w = random(1, 9);
            assertEquals(BioStatus.OK, bench.write(md, 10, w, 0));
            assertArrayEquals(w, onDevice(26, w.length));
        } finally {
            close();
        }
    }

    @Test
    void corruptBioByteOnWritesChangesTheDeviceNotTheCallersBuffer() throws TableException {
        open("flakey-corrupt-w");
        try {
            MappedDevice md = bench.mapped("0 256 flakey a" + DOWN + " 5 corrupt_bio_byte 600 w 255 1\n");
            byte[] data = random(2, 10);
            data[599] = 3;
            // Without FUA (flag mask 1) the write is not matched.
            assertEquals(BioStatus.OK, bench.write(md, 0, data, 0));
            assertArrayEquals(data, onDevice(16, data.length));
            Bio bio = bench.writeBio(md, 4, data, io.blkstack.bio.BioFlags.FUA);
            assertEquals(BioStatus.OK, io.blkstack.block.Submit.submitAndWaitStatus(bio));
            byte[] expected = data.clone();
            expected[599] = (byte) 255;
            assertArrayEquals(expected, onDevice(20, data.length));
            assertArrayEquals(data, io.blkstack.block.DataBuffers.contents(bio), "the caller's pages were restored");
            bio.put();
            assertEquals(List.of("0 256 flakey 0 0 1"), md.status(StatusForm.INFO));
        } finally {
            close();
        }
    }

    // Proves the up/down cycle follows the kernel clock from table load: on the simulated scheduler
    // (virtual time, no real waiting) a table with up 2 s and down 1 s passes a write at 0 s and
    // 1.5 s, fails one at 2.5 s, and passes again at 3.5 s (the cycle restarted).
    @Test
    void phasesFollowTheKernelClock() {
        io.blkstack.sim.SimRunner runner = new io.blkstack.sim.SimRunner(
                io.blkstack.sim.SimConfig.builder().memory(16L << 20).build());
        io.blkstack.sim.SimResult r = runner.runOnce(11, k -> {
            try (TargetBench b = new TargetBench(k)) {
                b.bottom("a", 256);
                MappedDevice md;
                try {
                    md = b.mapped("0 128 flakey a 0 2 1\n");
                } catch (TableException e) {
                    throw new IllegalStateException(e);
                }
                byte[] data = random(1, 12);
                long half = 500_000_000L;
                BioStatus[] got = new BioStatus[4];
                got[0] = b.write(md, 0, data, 0);
                io.blkstack.kernel.Task.current().sleepFor(3 * half);
                got[1] = b.write(md, 0, data, 0);
                io.blkstack.kernel.Task.current().sleepFor(2 * half);
                got[2] = b.write(md, 0, data, 0);
                io.blkstack.kernel.Task.current().sleepFor(2 * half);
                got[3] = b.write(md, 0, data, 0);
                List<BioStatus> expected = List.of(BioStatus.OK, BioStatus.OK, BioStatus.IOERR, BioStatus.OK);
                if (!expected.equals(List.of(got))) {
                    throw new IllegalStateException("statuses by phase " + List.of(got) + ", expected " + expected);
                }
            }
        });
        assertEquals(io.blkstack.sim.Outcome.OK, r.outcome(), r.explanation());
    }
}
