package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioIter;
import io.blkstack.bio.BioOp;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.Task;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A READ longer than the maximum payload, from a client that never learnt it ({@code EXPORT_NAME})
 * and uses simple replies, is sent window by window; a simple reply is one header and then every
 * byte of the data, so no other reply may be sent between its windows. nbd-tester-client's
 * {@code integrityhuge} found the writer doing so (a reply header 32 MiB into a 39 MiB READ, on a
 * file export whose completions come from I/O tasks). Each test forces the interleaving the old
 * code allowed with a device that orders two completions, and checks every byte of every reply.
 */
class NbdLongSimpleReadTest {

    private static final long MiB = 1L << 20;
    /** The export's maximum payload, so a READ of {@link #LONG_BYTES} goes in three windows. */
    private static final int WINDOW_BYTES = 64 * 1024;
    private static final int LONG_BYTES = 3 * WINDOW_BYTES;
    private static final int SHORT_BYTES = 4096;
    /** Where the short READs read: away from the long one. */
    private static final long SHORT_OFFSET = MiB;
    private static final long OTHER_OFFSET = 2 * MiB;
    private static final long WAIT_NANOS_MAX = 30_000_000_000L;

    private TestKernel tk;
    private NbdServer server;

    @AfterEach
    void tearDown() {
        ServerTeardown.close(server, tk);
    }

    private InetSocketAddress start(OrderingDevice device) throws IOException {
        Export export = new Export("a", device, false, "", 1, 4096, WINDOW_BYTES, false);
        server = new NbdServer(tk.kernel, List.of(export), new InetSocketAddress("127.0.0.1", 0));
        server.start();
        return server.localAddress();
    }

    /**
     * A short READ in flight when the long one arrives: its reply must not land between the long
     * READ's windows. The device holds the short READ until the reader waits (the fix: for the
     * short READ's reply, before the long READ begins; the old code: between the long READ's
     * windows, the first already on the reply ring) or until the long READ's second window
     * arrives (the old code), whichever comes first.
     */
    @Test
    void aReplyInFlightBeforeALongSimpleReadIsNotSentInsideIt() throws Exception {
        tk = new TestKernel("nbd-long-simple-read", 64 * MiB, Policies.defaults(), Faults.NONE);
        OrderingDevice device = new OrderingDevice(tk.kernel, "ordered", 4 * MiB, SHORT_OFFSET >>> 9,
                WINDOW_BYTES >>> 9);
        InetSocketAddress addr = start(device);
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            assertEquals(4 * MiB, c.exportName("a"));
            c.request(0, CMD_READ, 1, SHORT_OFFSET, SHORT_BYTES, null);
            device.arrived.await();
            c.request(0, CMD_READ, 2, 0, LONG_BYTES, null);
            releaseWhenTheReaderWaits(device);
            checkReplies(c, Map.of(1L, SHORT_OFFSET, 2L, 0L), Map.of(1L, SHORT_BYTES, 2L, LONG_BYTES));
        }
        assertTrue(tk.kernel.counters().value("nbd.windowed-requests") >= 1, "the long READ went in windows");
    }

    /**
     * Short READs sent after the long one: they must not be served (and replied to) before the
     * long READ's last window is sent. The device holds the long READ's last window until the
     * reader waits (the fix: for the long READ's reply to leave) or until the second short READ
     * arrives (the old code: the first short READ's reply is on the ring by then), whichever comes
     * first.
     */
    @Test
    void aRequestAfterALongSimpleReadIsRepliedToAfterItsLastWindow() throws Exception {
        tk = new TestKernel("nbd-long-simple-read", 64 * MiB, Policies.defaults(), Faults.NONE);
        OrderingDevice device = new OrderingDevice(tk.kernel, "ordered", 4 * MiB, (2L * WINDOW_BYTES) >>> 9,
                OTHER_OFFSET >>> 9);
        InetSocketAddress addr = start(device);
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            assertEquals(4 * MiB, c.exportName("a"));
            c.request(0, CMD_READ, 1, 0, LONG_BYTES, null);
            c.request(0, CMD_READ, 2, SHORT_OFFSET, SHORT_BYTES, null);
            c.request(0, CMD_READ, 3, OTHER_OFFSET, SHORT_BYTES, null);
            device.arrived.await();
            releaseWhenTheReaderWaits(device);
            checkReplies(c, Map.of(1L, 0L, 2L, SHORT_OFFSET, 3L, OTHER_OFFSET),
                    Map.of(1L, LONG_BYTES, 2L, SHORT_BYTES, 3L, SHORT_BYTES));
        }
    }

    /**
     * Completes the held READ once the reader (which submitted it) is in a kernel wait, unless the
     * device released it itself first (the other READ arrived; the reader then blocks on its
     * socket, which is no kernel wait). Bounded polling of those two conditions.
     */
    private static void releaseWhenTheReaderWaits(OrderingDevice device) {
        Task reader = device.heldBy();
        long deadline = System.nanoTime() + WAIT_NANOS_MAX;
        while (device.holding() && reader.awaitWait(w -> true, 10_000_000L) == null) {
            assertTrue(System.nanoTime() < deadline, "neither did the reader wait nor the other READ arrive");
        }
        device.releaseIfHeld();
    }

    /** Reads one reply per cookie, in any order; each must be whole and carry the device's bytes. */
    private static void checkReplies(NbdTestClient c, Map<Long, Long> offsets, Map<Long, Integer> lengths)
            throws IOException {
        Map<Long, byte[]> got = new HashMap<>();
        for (int i = 0; i < offsets.size(); i++) {
            NbdTestClient.Reply r = c.readReply();
            assertTrue(offsets.containsKey(r.cookie()), "reply to an unknown cookie " + r.cookie());
            assertEquals(0, r.error(), "reply to cookie " + r.cookie());
            got.put(r.cookie(), r.payload());
        }
        for (Map.Entry<Long, Long> e : offsets.entrySet()) {
            byte[] expected = OrderingDevice.contents(e.getValue(), lengths.get(e.getKey()));
            assertArrayEquals(expected, got.get(e.getKey()), "data of the reply to cookie " + e.getKey());
        }
        assertEquals(0, c.writeSync(0, new byte[] {1}, 0), "the connection still serves requests");
    }

    /**
     * A test device whose every 8-byte word reads as its own byte offset (writes are dropped). It
     * completes every bio at once, except the first READ starting at {@code heldSector}, which it
     * holds until {@link #releaseIfHeld} or until a READ starting at {@code otherSector} arrives
     * (that one's submitter is inside the submission, so the other READ's request is not finished
     * before the held one's completion is in).
     */
    static final class OrderingDevice extends BlockDevice {
        private final long heldSector;
        private final long otherSector;
        private final SpinLock lock = new SpinLock("ordering device");
        private final BioIter iter = new BioIter();
        private Bio held;
        private boolean heldOnce;
        private Task submitter;
        final Completion arrived = new Completion("held bio arrived");

        OrderingDevice(Kernel kernel, String name, long sizeBytes, long heldSector, long otherSector) {
            super(kernel, name, sizeBytes >>> Bio.SECTOR_SHIFT, QueueLimits.defaults());
            this.heldSector = heldSector;
            this.otherSector = otherSector;
        }

        /** The bytes at {@code offset}: each 8-byte word is its own offset, big-endian. */
        static byte[] contents(long offset, int length) {
            byte[] out = new byte[length];
            for (int i = 0; i < length; i++) {
                long at = offset + i;
                out[i] = (byte) ((at & ~7L) >>> (8 * (7 - (at & 7))));
            }
            return out;
        }

        @Override
        protected void submitBio(Bio bio) {
            if (bio.op() == BioOp.READ) {
                fill(bio);
            }
            Bio released = null;
            boolean arrivedNow = false;
            lock.lock();
            try {
                if (bio.op() == BioOp.READ && bio.sector() == heldSector && !heldOnce) {
                    heldOnce = true;
                    held = bio;
                    submitter = Task.current();
                    arrivedNow = true;
                } else if (bio.op() == BioOp.READ && bio.sector() == otherSector) {
                    released = held;
                    held = null;
                }
            } finally {
                lock.unlock();
            }
            if (arrivedNow) {
                arrived.complete();
            }
            if (released != null) {
                released.endio();
            }
            if (!arrivedNow) {
                bio.endio();
            }
        }

        private void fill(Bio bio) {
            lock.lock();
            try {
                long at = bio.sector() << Bio.SECTOR_SHIFT;
                for (iter.reset(bio); iter.next(); ) {
                    iter.page().buffer().put(iter.offset(), contents(at, iter.length()));
                    at += iter.length();
                }
            } finally {
                lock.unlock();
            }
        }

        /** Whether the first READ at the held sector arrived and is still held. */
        boolean holding() {
            lock.lock();
            try {
                return held != null;
            } finally {
                lock.unlock();
            }
        }

        /** The task that submitted the held READ (the connection's reader). */
        Task heldBy() {
            lock.lock();
            try {
                return submitter;
            } finally {
                lock.unlock();
            }
        }

        /** Completes the held READ if it is still held. */
        void releaseIfHeld() {
            Bio bio;
            lock.lock();
            try {
                bio = held;
                held = null;
            } finally {
                lock.unlock();
            }
            if (bio != null) {
                bio.endio();
            }
        }
    }
}
