package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.TestKernel;
import io.blkstack.block.TrackedRequests;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Byte-granular I/O over the NBD server: a minimum block size of 1 is advertised, and READ, WRITE,
 * WRITE_ZEROES, TRIM and BLOCK_STATUS at any byte offset and length are served, the unaligned ends
 * of writes by read-modify-write, serialised against overlapping writes in flight. Every check is
 * against a byte-array model of what was written. Clients that never learnt the block sizes
 * ({@code EXPORT_NAME}) may send READs and WRITEs beyond the advertised maximum; those are served
 * in windows inside a small arena.
 */
class NbdUnalignedTest {

    private static final long MiB = 1L << 20;

    private TestKernel tk;
    private NbdServer server;

    private InetSocketAddress start(long arenaBytes, Export export) throws IOException {
        server = new NbdServer(tk.kernel, List.of(export), new InetSocketAddress("127.0.0.1", 0));
        server.start();
        return server.localAddress();
    }

    private InetSocketAddress startMemory(long arenaBytes, long deviceBytes) throws IOException {
        tk = new TestKernel("nbd-unaligned", arenaBytes, Policies.defaults(), Faults.NONE);
        return start(arenaBytes, new Export("a", new MemoryDevice(tk.kernel, "mem", deviceBytes, 0), false, ""));
    }

    @AfterEach
    void tearDown() {
        ServerTeardown.close(server, tk);
    }

    private static byte[] pattern(int length, long seed) {
        byte[] b = new byte[length];
        new Random(seed).nextBytes(b);
        return b;
    }

    @Test
    void writesOfAnyLengthAtAnyOffsetReadBackExactly() throws Exception {
        InetSocketAddress addr = startMemory(64 * MiB, 4 * MiB);
        byte[] model = new byte[(int) (4 * MiB)];
        try (NbdTestClient simple = new NbdTestClient(addr).greet();
                NbdTestClient structured = new NbdTestClient(addr).greet()) {
            simple.go("a");
            structured.goStructured("a");
            // a base to merge into, so old bytes around each write are not zero
            byte[] base = pattern((int) MiB, 1);
            assertEquals(0, simple.writeSync(0, base, 0));
            System.arraycopy(base, 0, model, 0, base.length);
            long[][] writes = {
                {1, 1}, {7, 3}, {513, 511}, {1023, 2}, {4095, 2}, {8191, 4097}, {12345, 1_048_576 - 12345 + 77},
                {1 << 20, 3}, {(1 << 20) + 511, 1}, {100_000, 100_000}, {3 * MiB + 5, 511},
            };
            int seed = 10;
            for (long[] w : writes) {
                byte[] data = pattern((int) w[1], seed++);
                NbdTestClient c = seed % 2 == 0 ? simple : structured;
                assertEquals(0, c.writeSync(w[0], data, 0), "write of " + w[1] + " bytes at " + w[0]);
                System.arraycopy(data, 0, model, (int) w[0], data.length);
                assertArrayEquals(data, structured.readSync(w[0], data.length), "read back at " + w[0]);
                assertArrayEquals(data, simple.readSync(w[0], data.length), "simple read back at " + w[0]);
            }
            // reads at odd places, aligned or not, see exactly the model
            long[][] reads = {{0, 1}, {3, 5}, {511, 2}, {1000, 70_000}, {MiB - 1, 2}, {0, (int) (2 * MiB)}, {3 * MiB, 4096}};
            for (long[] r : reads) {
                assertArrayEquals(Arrays.copyOfRange(model, (int) r[0], (int) (r[0] + r[1])),
                        structured.readSync(r[0], (int) r[1]), "structured read of " + r[1] + " at " + r[0]);
                assertArrayEquals(Arrays.copyOfRange(model, (int) r[0], (int) (r[0] + r[1])),
                        simple.readSync(r[0], (int) r[1]), "simple read of " + r[1] + " at " + r[0]);
            }
            // the last byte of the export
            assertEquals(0, simple.writeSync(4 * MiB - 1, new byte[] {42}, CMD_FLAG_FUA));
            assertArrayEquals(new byte[] {42}, structured.readSync(4 * MiB - 1, 1));
        }
        assertEquals(0, server.exports().get(0).device().trackedRequests().count(), "no write left tracked");
    }

    @Test
    void unalignedZeroesTrimAndBlockStatusKeepTheBytesAroundThem() throws Exception {
        tk = new TestKernel("nbd-unaligned", 64 * MiB, Policies.defaults(), Faults.NONE);
        // a memory device tracks allocation: block status maps it, trims punch whole blocks
        InetSocketAddress addr = start(64 * MiB, new Export("a", new MemoryDevice(tk.kernel, "mem", MiB, 0), false, ""));
        byte[] model = pattern((int) MiB, 2);
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("a");
            assertEquals(0, c.writeSync(0, model, 0));
            // zeroes: within one block, across blocks, ending mid-block
            long[][] zeroes = {{5, 3}, {700, 5000}, {8192, 4096 + 1}, {20_000, 1}};
            for (long[] z : zeroes) {
                assertEquals(0, c.commandSync(CMD_WRITE_ZEROES, 0, z[0], z[1]));
                Arrays.fill(model, (int) z[0], (int) (z[0] + z[1]), (byte) 0);
            }
            assertArrayEquals(model, c.readSync(0, (int) MiB));
            // trim: advisory; the partial blocks at its ends keep their bytes, whole blocks may read as anything
            long trimStart = 65_536 + 100;
            long trimLength = 3 * 4096;
            assertEquals(0, c.commandSync(CMD_TRIM, 0, trimStart, trimLength));
            byte[] after = c.readSync(0, (int) MiB);
            long firstWhole = (trimStart + 511) & -512L;
            long endWhole = (trimStart + trimLength) & -512L;
            assertArrayEquals(Arrays.copyOfRange(model, 0, (int) firstWhole), Arrays.copyOfRange(after, 0, (int) firstWhole));
            assertArrayEquals(Arrays.copyOfRange(model, (int) endWhole, (int) MiB),
                    Arrays.copyOfRange(after, (int) endWhole, (int) MiB));
            // block status at odd offsets covers exactly the bytes asked for, no more
            c.request(0, CMD_BLOCK_STATUS, 40, 3, 1000, null);
            List<NbdTestClient.Reply> chunks = c.readFullReply();
            assertEquals(0, NbdTestClient.errorOf(chunks));
            ByteBuffer p = ByteBuffer.wrap(chunks.get(0).payload());
            p.getInt(); // context id
            long covered = 0;
            while (p.hasRemaining()) {
                covered += p.getInt() & 0xffffffffL;
                p.getInt();
            }
            assertEquals(1000, covered);
        }
    }

    /**
     * Proves the serialisation: a read-modify-write of bytes 100..110 of a block waits while a
     * read-modify-write of bytes 0..10 of the same block, from another connection, has its write in
     * flight (held by the device). Without the wait, the second would read the block without the
     * first's bytes and the first's write, landing later, would undo the second's bytes: a lost
     * update. How: the device holds the first write; the test waits (kernel wait, no sleep) until
     * the second connection's reader blocks on the device's tracked requests, then lets the first
     * write land; both writes' bytes must be there.
     */
    @Test
    void aReadModifyWriteWaitsForAnOverlappingWriteInFlight() throws Exception {
        tk = new TestKernel("nbd-unaligned", 64 * MiB, Policies.defaults(), Faults.NONE);
        long gatedSector = 64;
        WriteGatedDevice device = new WriteGatedDevice(tk.kernel, "gated", MiB, gatedSector);
        InetSocketAddress addr = start(64 * MiB, new Export("g", device, false, ""));
        long block = gatedSector * Bio.SECTOR_SIZE;
        byte[] first = pattern(10, 3);
        byte[] second = pattern(10, 4);
        try (NbdTestClient a = new NbdTestClient(addr).greet(); NbdTestClient b = new NbdTestClient(addr).greet()) {
            a.go("g");
            b.go("g");
            a.request(0, CMD_WRITE, 1, block, first.length, first);
            device.arrived.await(); // a's merged block is being written, and held there
            b.request(0, CMD_WRITE, 2, block + 100, second.length, second);
            Task reader = readerOf("nbd-2");
            Object waitedOn = reader.awaitWait(w -> w instanceof TrackedRequests.TrackedRequest, 10_000_000_000L);
            device.open(); // first, so that a failure below cannot leave the write held
            assertEquals(0, a.readReply().error());
            assertEquals(0, b.readReply().error());
            byte[] got = a.readSync(block, 512);
            assertArrayEquals(first, Arrays.copyOfRange(got, 0, 10));
            assertArrayEquals(second, Arrays.copyOfRange(got, 100, 110), "the second write's bytes were lost");
            assertNotNull(waitedOn, "the second read-modify-write never waited for the first");
        }
    }

    /**
     * On a device with 4 KiB logical blocks (a direct-I/O file on a 4 KiB file system), the
     * read-modify-write unit is the 4 KiB block: every bio the device sees is whole blocks (the
     * block layer fails any other), and byte writes, zeroes and reads at odd places match the model.
     */
    @Test
    void fourKiBLogicalBlocksAreReadModifiedWhole() throws Exception {
        tk = new TestKernel("nbd-unaligned", 64 * MiB, Policies.defaults(), Faults.NONE);
        WriteGatedDevice device = new WriteGatedDevice(tk.kernel, "4k", MiB, -1, 4096);
        InetSocketAddress addr = start(64 * MiB, new Export("a", device, false, ""));
        assertEquals(1, server.exports().get(0).minimumBlockSize());
        byte[] model = pattern((int) MiB, 9);
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("a");
            assertEquals(0, c.writeSync(0, model, 0));
            long[][] writes = {{1, 1}, {4095, 3}, {9000, 511}, {12_288 + 5, 4096 * 3}, {MiB - 3, 3}};
            int seed = 20;
            for (long[] w : writes) {
                byte[] data = pattern((int) w[1], seed++);
                assertEquals(0, c.writeSync(w[0], data, 0), "write of " + w[1] + " at " + w[0]);
                System.arraycopy(data, 0, model, (int) w[0], data.length);
            }
            assertEquals(0, c.commandSync(CMD_WRITE_ZEROES, 0, 70_000, 5000));
            Arrays.fill(model, 70_000, 75_000, (byte) 0);
            assertArrayEquals(model, c.readSync(0, (int) MiB));
            assertArrayEquals(Arrays.copyOfRange(model, 4093, 4100), c.readSync(4093, 7));
        }
    }

    /** The reader task of connection {@code name} (connections are numbered from 1 in accept order). */
    private Task readerOf(String name) {
        for (Task t : tk.kernel.scheduler().tasks()) {
            if (t.name().equals(name + "-reader")) {
                return t;
            }
        }
        throw new AssertionError("no reader task " + name + "-reader");
    }

    /**
     * A client that connects with {@code EXPORT_NAME} never learns the maximum payload, so it may
     * send a 40 MiB WRITE and READ (beyond the 32 MiB maximum) to a server whose arena is 8 MiB:
     * both are served in windows inside the payload budget, never by holding the whole payload,
     * and the data read back (simple and structured replies, unaligned too) is what was written.
     */
    @Test
    void exportNameClientsGetRequestsBeyondTheMaximumServedInWindows() throws Exception {
        InetSocketAddress addr = startMemory(8 * MiB, 48 * MiB);
        int maximum = server.exports().get(0).maximumPayload();
        assertTrue(maximum < 8 * MiB, "the advertised maximum fits the small arena: " + maximum);
        int length = (int) (40 * MiB);
        byte[] data = pattern(length, 5);
        long offset = 3 * MiB + 7; // unaligned both ends as well
        try (NbdTestClient simple = new NbdTestClient(addr).greet();
                NbdTestClient structured = new NbdTestClient(addr).greet()) {
            assertEquals(48 * MiB, simple.exportName("a"));
            structured.option(OPT_STRUCTURED_REPLY, new byte[0]);
            structured.structured = true;
            assertEquals(48 * MiB, structured.exportName("a"));
            assertEquals(0, simple.writeSync(offset, data, 0));
            assertArrayEquals(data, simple.readSync(offset, length), "simple 40 MiB read");
            assertArrayEquals(data, structured.readSync(offset, length), "structured 40 MiB read");
            byte[] aligned = pattern(length, 6);
            assertEquals(0, structured.writeSync(4 * MiB, aligned, 0));
            assertArrayEquals(aligned, simple.readSync(4 * MiB, length));
            // GO without asking for INFO_BLOCK_SIZE: the client never agreed to the maximum either
            try (NbdTestClient goWithout = new NbdTestClient(addr).greet()) {
                NbdTestClient.check(goWithout.option(OPT_GO, NbdTestClient.infoData("a")), REP_ACK);
                assertArrayEquals(aligned, goWithout.readSync(4 * MiB, length), "40 MiB read after GO without sizes");
            }
            // a client that asked for the block sizes is still held to the maximum
            try (NbdTestClient strict = new NbdTestClient(addr).greet()) {
                strict.go("a");
                strict.request(0, CMD_READ, 3, 0, maximum + 1L, null);
                assertEquals(EINVAL, NbdTestClient.errorOf(strict.readFullReply()));
            }
        }
        assertEquals(server.budget().totalPages(), server.budget().freePages(), "every budget page came back");
        assertTrue(tk.kernel.counters().value("nbd.windowed-requests") >= 4, "the long requests went in windows");
    }

    /**
     * An {@code EXPORT_NAME} client that vanishes in the middle of a 40 MiB WRITE (some windows
     * written, one half read from the socket): its request ends, the range it registered is
     * released, a well-behaved client's overlapping unaligned write then goes through, and at the
     * end every page, bio and budget page is back (the kernel's close checks).
     */
    @Test
    void aClientVanishingInTheMiddleOfAWindowedWriteLeavesNothingHeld() throws Exception {
        InetSocketAddress addr = startMemory(8 * MiB, 48 * MiB);
        try (NbdTestClient vanish = new NbdTestClient(addr).greet()) {
            vanish.exportName("a");
            vanish.request(0, CMD_WRITE, 1, 5, 40 * MiB, null);
            vanish.write(ByteBuffer.wrap(pattern((int) (9 * MiB + 12345), 7)));
        }
        try (NbdTestClient good = new NbdTestClient(addr).greet()) {
            good.go("a");
            byte[] data = pattern(1000, 8);
            assertEquals(0, good.writeSync(MiB + 3, data, 0)); // waits for the vanished write's range to be released
            assertArrayEquals(data, good.readSync(MiB + 3, data.length));
        }
        server.close();
        assertEquals(0, server.exports().get(0).device().trackedRequests().count(), "no write left tracked");
        assertEquals(server.budget().totalPages(), server.budget().freePages(), "every budget page came back");
    }

    /**
     * A test device over a byte array that completes every bio at once, except the first WRITE
     * starting at the gated sector, which it holds (its data not yet stored) until {@link #open}.
     */
    static final class WriteGatedDevice extends BlockDevice {
        private final byte[] data;
        private final long gatedSector;
        private final SpinLock lock = new SpinLock("write-gated device");
        private final BioIter iter = new BioIter();
        private Bio held;
        private boolean gateUsed;
        final io.blkstack.kernel.Completion arrived = new io.blkstack.kernel.Completion("gated write arrived");

        WriteGatedDevice(Kernel kernel, String name, long sizeBytes, long gatedSector) {
            this(kernel, name, sizeBytes, gatedSector, Bio.SECTOR_SIZE);
        }

        /** @param gatedSector -1 for none */
        WriteGatedDevice(Kernel kernel, String name, long sizeBytes, long gatedSector, int logicalBlockBytes) {
            super(kernel, name, sizeBytes >>> Bio.SECTOR_SHIFT,
                    QueueLimits.defaults().withLogicalBlockSize(logicalBlockBytes)
                            .withPhysicalBlockSize(Math.max(logicalBlockBytes, Bio.SECTOR_SIZE)));
            this.data = new byte[(int) sizeBytes];
            this.gatedSector = gatedSector;
        }

        @Override
        protected void submitBio(Bio bio) {
            boolean hold = false;
            lock.lock();
            try {
                if (bio.op() == BioOp.READ) {
                    copy(bio, false);
                } else if (bio.op() == BioOp.WRITE && bio.sector() == gatedSector && !gateUsed) {
                    gateUsed = true;
                    held = bio;
                    hold = true;
                } else if (bio.op() == BioOp.WRITE) {
                    copy(bio, true);
                }
            } finally {
                lock.unlock();
            }
            if (hold) {
                arrived.complete();
                return;
            }
            bio.endio();
        }

        /** Moves a bio's bytes between its pages and the array (under the lock). */
        private void copy(Bio bio, boolean write) {
            long position = bio.sector() << Bio.SECTOR_SHIFT;
            for (iter.reset(bio); iter.next(); ) {
                ByteBuffer page = iter.page().slice(iter.offset(), iter.length());
                if (write) {
                    page.get(data, (int) position, iter.length());
                } else {
                    page.put(data, (int) position, iter.length());
                }
                position += iter.length();
            }
        }

        /** Stores and completes the held write. */
        void open() {
            Bio bio;
            lock.lock();
            try {
                bio = held;
                held = null;
                if (bio != null) {
                    copy(bio, true);
                }
            } finally {
                lock.unlock();
            }
            if (bio == null) {
                throw new IllegalStateException("no gated write is held");
            }
            bio.endio();
        }
    }
}
