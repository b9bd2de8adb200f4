package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.ReadReference;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.MemoryDevice;
import io.blkstack.block.NullDevice;
import io.blkstack.block.QueueLimits;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Completion;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.TaskKind;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Protocol tests of {@link NbdServer} with a scripted client ({@link NbdTestClient}): every option
 * and command, every bad request with the error {@code doc/proto.md} prescribes, out-of-order
 * replies, and misbehaving clients next to a well-behaved one. Every test ends by closing the
 * server and the kernel, which checks that every bio and page came back.
 */
class NbdServerTest {

    private static final long MiB = 1L << 20;

    private TestKernel tk;
    private NbdServer server;

    /** Starts a kernel with a 128 MiB arena and a server over the given exports on an ephemeral port. */
    private InetSocketAddress start(ExportSpec... specs) throws IOException {
        tk = new TestKernel("nbd-test", 128 * MiB, Policies.defaults(), Faults.NONE);
        List<Export> exports = new ArrayList<>();
        for (ExportSpec s : specs) {
            exports.add(s.make(tk));
        }
        server = new NbdServer(tk.kernel, exports, new InetSocketAddress("127.0.0.1", 0));
        server.start();
        return server.localAddress();
    }

    @FunctionalInterface
    private interface ExportSpec {
        Export make(TestKernel tk);
    }

    private static ExportSpec memory(String name, long bytes, boolean readOnly, String description) {
        return tk -> new Export(name, new MemoryDevice(tk.kernel, "dev-" + name, bytes, 0), readOnly, description);
    }

    private static ExportSpec device(String name, java.util.function.Function<TestKernel, BlockDevice> dev) {
        return tk -> new Export(name, dev.apply(tk), false, "");
    }

    @FunctionalInterface
    private interface SocketWork {
        void run() throws IOException;
    }

    /** Runs socket writes in a kernel task (so the test can read replies meanwhile); completes when done. */
    private Completion inBackground(SocketWork work) {
        Completion done = new Completion("test sender");
        tk.kernel.spawn("test-sender", TaskKind.USER, () -> {
            try {
                work.run();
            } catch (IOException e) {
                // the test fails on the replies it expects
            } finally {
                done.complete();
            }
        });
        return done;
    }

    @AfterEach
    void tearDown() {
        try {
            if (server != null) {
                server.close();
                assertEquals(0, server.connectionCount(), "connections left after close");
            }
        } finally {
            if (tk != null) {
                tk.close(); // throws if any page, bio or pool element was not returned
            }
        }
    }

    private static byte[] pattern(int length, long seed) {
        byte[] b = new byte[length];
        new Random(seed).nextBytes(b);
        return b;
    }

    // ---- handshake -----------------------------------------------------------------------------

    @Test
    void greetingAdvertisesFixedNewstyleAndNoZeroes() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            assertEquals(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, c.handshakeFlags);
            c.sendOption(OPT_ABORT, new byte[0]);
            assertEquals(REP_ACK, c.readOptionReply().type());
            assertTrue(c.readsEof());
        }
    }

    @Test
    void unknownClientFlagsDropTheConnection() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet(1 << 5)) {
            assertTrue(c.readsEof());
        }
    }

    @Test
    void listShowsEveryExportWithItsDescription() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, "first"), memory("b", 2 * MiB, true, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            List<NbdTestClient.OptionReply> replies = c.option(OPT_LIST, new byte[0]);
            assertEquals(3, replies.size());
            List<String> names = new ArrayList<>();
            for (NbdTestClient.OptionReply r : replies.subList(0, 2)) {
                assertEquals(REP_SERVER, r.type());
                ByteBuffer b = r.buffer();
                byte[] name = new byte[b.getInt()];
                b.get(name);
                byte[] rest = new byte[b.remaining()];
                b.get(rest);
                names.add(new String(name, StandardCharsets.UTF_8) + "|" + new String(rest, StandardCharsets.UTF_8));
            }
            assertEquals(List.of("a|first", "b|"), names);
            assertEquals(REP_ACK, replies.get(2).type());
            // LIST with data is malformed
            assertEquals(REP_ERR_INVALID, c.option(OPT_LIST, new byte[] {1}).get(0).type());
        }
    }

    @Test
    void infoReportsExportNameDescriptionAndBlockSizes() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""), memory("b", 2 * MiB, true, "the b disk"));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            List<NbdTestClient.OptionReply> replies = NbdTestClient.check(
                    c.option(OPT_INFO, NbdTestClient.infoData("b", INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE)),
                    REP_ACK);
            boolean export = false;
            boolean name = false;
            boolean description = false;
            boolean sizes = false;
            for (NbdTestClient.OptionReply r : replies.subList(0, replies.size() - 1)) {
                assertEquals(REP_INFO, r.type());
                ByteBuffer b = r.buffer();
                switch (b.getShort()) {
                    case INFO_EXPORT -> {
                        assertEquals(12, r.data().length);
                        assertEquals(2 * MiB, b.getLong());
                        int flags = b.getShort() & 0xffff;
                        assertEquals(FLAG_HAS_FLAGS | FLAG_READ_ONLY | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_CACHE
                                | FLAG_CAN_MULTI_CONN, flags);
                        export = true;
                    }
                    case INFO_NAME -> name = "b".equals(rest(b));
                    case INFO_DESCRIPTION -> description = "the b disk".equals(rest(b));
                    case INFO_BLOCK_SIZE -> {
                        assertEquals(14, r.data().length);
                        assertEquals(1, b.getInt(), "any byte range: unaligned ends by read-modify-write");
                        assertEquals(4096, b.getInt());
                        assertEquals(32 * MiB, b.getInt());
                        sizes = true;
                    }
                    default -> fail("unexpected info type");
                }
            }
            assertTrue(export && name && description && sizes);
            // INFO does not end negotiation: GO on the writable export still works
            c.go("a");
            assertEquals(0, c.writeSync(0, pattern(4096, 1), 0));
        }
    }

    @Test
    void writableExportAdvertisesWriteCommandsAndFastZero() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            ByteBuffer b = c.go("a").get(0).buffer();
            assertEquals(INFO_EXPORT, b.getShort());
            b.getLong();
            assertEquals(FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES
                    | FLAG_CAN_MULTI_CONN | FLAG_SEND_CACHE | FLAG_SEND_FAST_ZERO, b.getShort() & 0xffff);
        }
    }

    private static String rest(ByteBuffer b) {
        byte[] bytes = new byte[b.remaining()];
        b.get(bytes);
        return new String(bytes, StandardCharsets.UTF_8);
    }

    @Test
    void unknownOptionsUnknownExportsAndMalformedDataLeaveNegotiationOpen() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            assertEquals(REP_ERR_UNSUP, c.option(99, new byte[] {1, 2, 3}).get(0).type());
            assertEquals(REP_ERR_UNSUP, c.option(OPT_STARTTLS, new byte[0]).get(0).type());
            assertEquals(REP_ERR_UNKNOWN, c.option(OPT_INFO, NbdTestClient.infoData("nope")).get(0).type());
            assertEquals(REP_ERR_UNKNOWN, c.option(OPT_GO, NbdTestClient.infoData("nope")).get(0).type());
            // name length larger than the option data
            assertEquals(REP_ERR_INVALID, c.option(OPT_GO, new byte[] {0, 0, 0, 9, 'a', 0, 0}).get(0).type());
            // too short to hold a name length and an info count
            assertEquals(REP_ERR_INVALID, c.option(OPT_INFO, new byte[] {0, 0}).get(0).type());
            // info count that does not match the data
            byte[] bad = NbdTestClient.infoData("a", INFO_NAME);
            assertEquals(REP_ERR_INVALID, c.option(OPT_GO, Arrays.copyOf(bad, bad.length - 1)).get(0).type());
            assertEquals(REP_ERR_INVALID, c.option(OPT_STRUCTURED_REPLY, new byte[] {0}).get(0).type());
            // metadata contexts need structured replies first
            assertEquals(REP_ERR_INVALID,
                    c.option(OPT_SET_META_CONTEXT, NbdTestClient.metaData("a", META_BASE_ALLOCATION)).get(0).type());
            assertEquals(REP_ACK, c.option(OPT_STRUCTURED_REPLY, new byte[0]).get(0).type());
            // a query whose length runs past the option data
            byte[] meta = NbdTestClient.metaData("a", META_BASE_ALLOCATION);
            assertEquals(REP_ERR_INVALID, c.option(OPT_SET_META_CONTEXT, Arrays.copyOf(meta, meta.length - 1)).get(0)
                    .type());
            assertEquals(REP_ERR_UNKNOWN,
                    c.option(OPT_SET_META_CONTEXT, NbdTestClient.metaData("nope", META_BASE_ALLOCATION)).get(0).type());
            // still negotiating: GO succeeds and the export works
            c.go("a");
            assertEquals(0, c.writeSync(0, pattern(512, 2), 0));
        }
    }

    @Test
    void oversizedOptionDataIsSkippedNotStored() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            assertEquals(REP_ERR_TOO_BIG, c.option(OPT_INFO, new byte[1 << 20]).get(0).type());
            assertEquals(REP_ERR_UNSUP, c.option(77, new byte[1 << 20]).get(0).type());
            c.go("a");
        }
    }

    @Test
    void metaContextListAndSet() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            assertEquals(REP_ACK, c.option(OPT_STRUCTURED_REPLY, new byte[0]).get(0).type());
            for (String[] queries : new String[][] {{}, {"base:"}, {META_BASE_ALLOCATION}}) {
                List<NbdTestClient.OptionReply> list = c.option(OPT_LIST_META_CONTEXT,
                        NbdTestClient.metaData("a", queries));
                assertEquals(2, list.size(), Arrays.toString(queries));
                assertEquals(REP_META_CONTEXT, list.get(0).type());
                ByteBuffer b = list.get(0).buffer();
                assertEquals(0, b.getInt());
                assertEquals(META_BASE_ALLOCATION, rest(b));
            }
            // unknown namespaces are ignored, not errors
            List<NbdTestClient.OptionReply> none = c.option(OPT_LIST_META_CONTEXT,
                    NbdTestClient.metaData("a", "qemu:dirty-bitmap:x"));
            assertEquals(1, none.size());
            assertEquals(REP_ACK, none.get(0).type());
            List<NbdTestClient.OptionReply> set = c.option(OPT_SET_META_CONTEXT,
                    NbdTestClient.metaData("a", "x-foo:bar", META_BASE_ALLOCATION));
            assertEquals(2, set.size());
            assertEquals(REP_META_CONTEXT, set.get(0).type());
            assertEquals(NbdHandshake.ALLOCATION_CONTEXT_ID, set.get(0).buffer().getInt());
            assertEquals(REP_ACK, set.get(1).type());
        }
    }

    @Test
    void exportNameWithAndWithoutZeroes() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""), memory("default", 2 * MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet(FLAG_C_FIXED_NEWSTYLE)) {
            c.sendOption(OPT_EXPORT_NAME, "a".getBytes(StandardCharsets.UTF_8));
            ByteBuffer b = c.read(134);
            assertEquals(MiB, b.getLong());
            assertTrue((b.getShort() & FLAG_HAS_FLAGS) != 0);
            while (b.hasRemaining()) {
                assertEquals(0, b.get());
            }
            assertEquals(0, c.writeSync(0, pattern(4096, 3), 0));
        }
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.sendOption(OPT_EXPORT_NAME, new byte[0]); // empty name: the export named "default"
            assertEquals(2 * MiB, c.read(10).getLong());
            byte[] data = pattern(4096, 4);
            assertEquals(0, c.writeSync(4096, data, 0));
            assertArrayEquals(data, c.readSync(4096, 4096));
        }
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.sendOption(OPT_EXPORT_NAME, "nope".getBytes(StandardCharsets.UTF_8));
            assertTrue(c.readsEof(), "an unknown export after EXPORT_NAME ends the session");
        }
    }

    @Test
    void emptyNameWithoutADefaultExportSelectsTheFirst() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""), memory("b", 2 * MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            ByteBuffer b = c.go("").get(0).buffer();
            b.getShort();
            assertEquals(MiB, b.getLong());
        }
    }

    // ---- transmission --------------------------------------------------------------------------

    @Test
    void writeReadFlushTrimZeroesCacheSimpleReplies() throws Exception {
        InetSocketAddress addr = start(memory("a", 8 * MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.go("a");
            byte[] big = pattern((int) (3 * MiB + 4096), 5); // several bios
            assertEquals(0, c.writeSync(512, big, 0));
            assertArrayEquals(big, c.readSync(512, big.length));
            byte[] fua = pattern(8192, 6);
            assertEquals(0, c.writeSync(5 * MiB, fua, CMD_FLAG_FUA));
            assertEquals(0, c.commandSync(CMD_FLUSH, 0, 0, 0));
            assertArrayEquals(fua, c.readSync(5 * MiB, 8192));
            assertEquals(0, c.commandSync(CMD_WRITE_ZEROES, CMD_FLAG_NO_HOLE, 5 * MiB, 4096));
            byte[] expect = fua.clone();
            Arrays.fill(expect, 0, 4096, (byte) 0);
            assertArrayEquals(expect, c.readSync(5 * MiB, 8192));
            assertEquals(0, c.commandSync(CMD_TRIM, 0, 0, 8 * MiB));
            assertEquals(0, c.commandSync(CMD_CACHE, 0, 0, MiB));
            assertEquals(0, c.commandSync(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, MiB)); // memory zeroes fast
            assertArrayEquals(new byte[4096], c.readSync(MiB, 4096));
            c.request(0, CMD_DISC, 10, 0, 0, null);
            assertTrue(c.readsEof());
        }
    }

    /**
     * Proves a fault while the reader serves a request ends that connection and nothing else: a
     * device whose submit throws (a bug) for READs of sector 8 throws into the reader that issued
     * one. Its client sees the stream end instead of waiting for ever; a second client of the same
     * server still reads and writes; the server's close (which waits for every connection) returns;
     * the fault is a reported crash; and the bio the bug swallowed is reported lost by the kernel's
     * close, the request having kept it rather than free pages a device may still touch.
     */
    @Test
    @Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a hung close cannot be interrupted
    void aFaultWhileServingARequestEndsThatConnectionOnly() throws Exception {
        InetSocketAddress addr = start(faultyAtSector8(BioOp.READ));
        try (NbdTestClient hurt = new NbdTestClient(addr).greet(); NbdTestClient other = new NbdTestClient(addr).greet()) {
            hurt.go("f");
            other.go("f");
            assertEquals(0, other.writeSync(0, new byte[4096], 0));
            hurt.request(0, CMD_READ, 31, 4096, 4096, null);
            assertTrue(hurt.readsEof(), "the client of the failed reader got neither a reply nor the stream's end");
            assertEquals(0, other.writeSync(8192, new byte[4096], 0));
            assertEquals(4096, other.readSync(0, 4096).length);
        }
        closeExpectingTheLostRequest("a target's bug");
    }

    /**
     * Proves a fault in a WRITE fails later writes to its blocks instead of hanging them: the
     * lost WRITE stays registered in the device's tracked requests (a bio of it may still land),
     * so another client's unaligned write to the same block (a read-modify-write, which must not
     * run beside it) gets EIO at once rather than wait for a request that may never end; its
     * writes elsewhere succeed, and the server's close returns.
     */
    @Test
    @Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a hung close cannot be interrupted
    void aFaultInAWriteFailsLaterWritesToItsBlockInsteadOfHangingThem() throws Exception {
        InetSocketAddress addr = start(faultyAtSector8(BioOp.WRITE));
        try (NbdTestClient hurt = new NbdTestClient(addr).greet(); NbdTestClient other = new NbdTestClient(addr).greet()) {
            hurt.go("f");
            other.go("f");
            hurt.request(0, CMD_WRITE, 51, 4096, 4096, new byte[4096]);
            assertTrue(hurt.readsEof(), "the client of the failed reader got neither a reply nor the stream's end");
            assertEquals(EIO, other.writeSync(4096 + 100, new byte[50], 0), "a read-modify-write over the lost write");
            assertEquals(0, other.writeSync(16384 + 100, new byte[50], 0), "a read-modify-write elsewhere");
            assertEquals(0, other.writeSync(4608, new byte[512], 0), "a plain write never waits for a plain one");
        }
        closeExpectingTheLostRequest("a target's bug");
    }

    /**
     * Proves a fault while the writer frees a sent reply ends that connection and nothing else: a
     * device holds READs by reference (as a file device does) with a release hook that throws (a
     * bug in an end-io above the held bio, which runs on the writer after the send). The client gets
     * its reply and then the stream's end; its other READ in flight is still freed (one request is
     * lost, not two); another client goes on; the server's close returns.
     */
    @Test
    @Timeout(value = 60, threadMode = Timeout.ThreadMode.SEPARATE_THREAD) // a hung close cannot be interrupted
    void aFaultWhileFreeingAReplyEndsThatConnectionOnly(@TempDir Path dir) throws Exception {
        Path file = dir.resolve("held");
        byte[] data = pattern(4 * (int) MiB, 7);
        Files.write(file, data);
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            InetSocketAddress addr = start(tk -> new Export("h", new BlockDevice(tk.kernel, "holding", (4 * MiB) >>> 9,
                    QueueLimits.defaults()) {
                @Override
                public boolean readsByReference() {
                    return true;
                }

                @Override
                protected void submitBio(Bio bio) {
                    ReadReference reference = bio.readReference();
                    long position = bio.sector() << Bio.SECTOR_SHIFT;
                    Runnable released = position == 8192 ? () -> {
                        throw new IllegalStateException("an end-io's bug");
                    } : () -> { };
                    if (reference == null || !reference.tryHold(bio, channel, position, released)) {
                        bio.endio(); // a WRITE (ignored) or a READ given pages: zeros will do
                    }
                }
            }, false, ""));
            try (NbdTestClient hurt = new NbdTestClient(addr).greet(); NbdTestClient other = new NbdTestClient(addr).greet()) {
                hurt.go("h");
                other.go("h");
                assertArrayEquals(Arrays.copyOfRange(data, 0, 4096), other.readSync(0, 4096));
                // Two READs in flight: the first one's release faults, the second must still be freed.
                hurt.request(0, CMD_READ, 41, 8192, 4096, null);
                hurt.request(0, CMD_READ, 42, 16384, 4096, null);
                NbdTestClient.Reply first = hurt.readReply();
                assertEquals(41, first.cookie());
                assertArrayEquals(Arrays.copyOfRange(data, 8192, 12288), first.payload(), "the reply left before the fault");
                assertTrue(hurt.readsEof(), "the client of the failed writer got no stream end");
                assertArrayEquals(Arrays.copyOfRange(data, 4096, 8192), other.readSync(4096, 4096));
            }
            closeExpectingTheLostRequest("an end-io's bug");
        }
    }

    /**
     * Export {@code f}: a 4 MiB device that completes every bio at once (reads leave the pages as
     * they are) except that its submit throws (a target's bug) for {@code op} at sector 8.
     */
    private static ExportSpec faultyAtSector8(BioOp op) {
        return tk -> new Export("f", new BlockDevice(tk.kernel, "faulty", (4 * MiB) >>> 9, QueueLimits.defaults()) {
            @Override
            protected void submitBio(Bio bio) {
                if (bio.op() == op && bio.sector() == 8) {
                    throw new IllegalStateException("a target's bug");
                }
                bio.endio();
            }
        }, false, "");
    }

    /**
     * After a fault: the server's close returns (it waited for no lost request) with every
     * connection gone, the fault is a reported crash, and the closes of the server's bio set and of
     * the kernel report the bio and page the lost request kept.
     */
    private void closeExpectingTheLostRequest(String fault) {
        NbdServer s = server;
        server = null;
        IllegalStateException lost = assertThrows(IllegalStateException.class, s::close);
        // Every connection has ended: the lost request keeps what it was charged (a page of data, one
        // for its vec array), and every other request of its connection gave its pages back.
        assertEquals(s.budget().totalPages() - 2, s.budget().freePages(), "payload budget pages not returned");
        assertTrue(lost.getMessage().matches("mempool nbd-b\\w+: 1 element\\(s\\) not returned at close"), lost.getMessage());
        assertEquals(0, s.connectionCount());
        assertTrue(tk.kernel.crashes().stream().anyMatch(c -> c.contains(fault)), tk.kernel.crashes().toString());
        TestKernel kernel = tk;
        tk = null;
        IllegalStateException pages = assertThrows(IllegalStateException.class, kernel::close);
        assertTrue(pages.toString().contains("not returned"), pages.toString());
    }

    /**
     * Proves the split of large structured READ replies (ReplyWriter.gatherReply): a READ of 64 KiB
     * or more is two OFFSET_DATA chunks, the first 64 bytes without DONE and then the rest with
     * DONE, each at its own offset, and the bytes reassemble to what was written; a smaller READ
     * is one chunk.
     */
    @Test
    void aLargeStructuredReadIsTwoChunksAndASmallOneIsOne() throws Exception {
        InetSocketAddress addr = start(memory("a", 2 * MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("a");
            byte[] data = pattern((int) MiB, 11);
            assertEquals(0, c.writeSync(MiB, data, 0));
            int lead = ReplyWriter.SPLIT_READ_LEAD_BYTES;
            for (int length : new int[] {(int) MiB, (int) ReplyWriter.SPLIT_READ_MIN_BYTES}) {
                long offset = MiB + 4096;
                int n = Math.min(length, (int) MiB - 4096);
                c.request(0, CMD_READ, 21, offset, n, null);
                List<NbdTestClient.Reply> chunks = c.readFullReply();
                assertEquals(2, chunks.size(), n + " bytes");
                NbdTestClient.Reply first = chunks.get(0);
                NbdTestClient.Reply second = chunks.get(1);
                assertEquals(REPLY_TYPE_OFFSET_DATA, first.type());
                assertEquals(0, first.flags() & REPLY_FLAG_DONE, "the first chunk ends the reply");
                assertEquals(offset, ByteBuffer.wrap(first.payload()).getLong());
                assertEquals(8 + lead, first.payload().length);
                assertEquals(REPLY_TYPE_OFFSET_DATA, second.type());
                assertEquals(REPLY_FLAG_DONE, second.flags() & REPLY_FLAG_DONE);
                assertEquals(offset + lead, ByteBuffer.wrap(second.payload()).getLong());
                assertEquals(8 + n - lead, second.payload().length);
                assertArrayEquals(Arrays.copyOfRange(data, 4096, 4096 + n), NbdTestClient.assemble(chunks, offset, n));
            }
            int small = (int) ReplyWriter.SPLIT_READ_MIN_BYTES - 512;
            c.request(0, CMD_READ, 22, MiB, small, null);
            List<NbdTestClient.Reply> one = c.readFullReply();
            assertEquals(1, one.size());
            assertEquals(REPLY_FLAG_DONE, one.get(0).flags() & REPLY_FLAG_DONE);
            assertArrayEquals(Arrays.copyOf(data, small), NbdTestClient.assemble(one, MiB, small));
        }
    }

    /**
     * Proves the split of large data chunks in a READ reply with holes (ReplyWriter.sendStructuredRead):
     * a READ over a hole and 128 KiB of data is a hole chunk, then the data as two OFFSET_DATA
     * chunks (64 bytes, then the rest, which carries DONE); a smaller data chunk is not split.
     */
    @Test
    void aLargeDataChunkBesideAHoleIsSplitToo() throws Exception {
        InetSocketAddress addr = start(memory("a", 2 * MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("a");
            byte[] data = pattern((int) MiB, 12);
            assertEquals(0, c.writeSync(MiB, data, 0));
            int lead = ReplyWriter.SPLIT_READ_LEAD_BYTES;
            int hole = 64 * 1024;
            int n = hole + 128 * 1024;
            c.request(0, CMD_READ, 23, MiB - hole, n, null);
            List<NbdTestClient.Reply> chunks = c.readFullReply();
            assertEquals(3, chunks.size());
            assertEquals(REPLY_TYPE_OFFSET_HOLE, chunks.get(0).type());
            assertEquals(REPLY_TYPE_OFFSET_DATA, chunks.get(1).type());
            assertEquals(MiB, ByteBuffer.wrap(chunks.get(1).payload()).getLong());
            assertEquals(8 + lead, chunks.get(1).payload().length);
            assertEquals(0, chunks.get(1).flags() & REPLY_FLAG_DONE);
            assertEquals(MiB + lead, ByteBuffer.wrap(chunks.get(2).payload()).getLong());
            assertEquals(REPLY_FLAG_DONE, chunks.get(2).flags() & REPLY_FLAG_DONE);
            byte[] expected = new byte[n];
            System.arraycopy(data, 0, expected, hole, n - hole);
            assertArrayEquals(expected, NbdTestClient.assemble(chunks, MiB - hole, n));
            int small = hole + 4096;
            c.request(0, CMD_READ, 24, MiB - hole, small, null);
            List<NbdTestClient.Reply> two = c.readFullReply();
            assertEquals(2, two.size(), "a hole and one data chunk of 4 KiB");
            assertArrayEquals(Arrays.copyOf(expected, small), NbdTestClient.assemble(two, MiB - hole, small));
        }
    }

    @Test
    void structuredReadSendsHolesAndBlockStatusMapsAllocation() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("a");
            byte[] data = pattern(65536, 7);
            assertEquals(0, c.writeSync(65536, data, 0));
            c.request(0, CMD_READ, 11, 0, 262144, null);
            List<NbdTestClient.Reply> chunks = c.readFullReply();
            List<Integer> types = new ArrayList<>();
            for (NbdTestClient.Reply r : chunks) {
                types.add(r.type());
            }
            // The 64 KiB of data are two chunks (ReplyWriter.SPLIT_READ_MIN_BYTES): 64 bytes, then the rest.
            assertEquals(List.of(REPLY_TYPE_OFFSET_HOLE, REPLY_TYPE_OFFSET_DATA, REPLY_TYPE_OFFSET_DATA,
                    REPLY_TYPE_OFFSET_HOLE), types);
            byte[] expect = new byte[262144];
            System.arraycopy(data, 0, expect, 65536, 65536);
            assertArrayEquals(expect, NbdTestClient.assemble(chunks, 0, 262144));

            c.request(0, CMD_BLOCK_STATUS, 12, 0, MiB, null);
            List<NbdTestClient.Reply> status = c.readFullReply();
            assertEquals(1, status.size());
            assertEquals(REPLY_TYPE_BLOCK_STATUS, status.get(0).type());
            ByteBuffer b = ByteBuffer.wrap(status.get(0).payload());
            assertEquals(NbdHandshake.ALLOCATION_CONTEXT_ID, b.getInt());
            int[][] expected = {{65536, STATE_HOLE | STATE_ZERO}, {65536, 0}, {(int) MiB - 131072, STATE_HOLE | STATE_ZERO}};
            for (int[] e : expected) {
                assertEquals(e[0], b.getInt());
                assertEquals(e[1], b.getInt());
            }
            assertFalse(b.hasRemaining());

            c.request(CMD_FLAG_REQ_ONE, CMD_BLOCK_STATUS, 13, 65536, 32768, null);
            ByteBuffer one = ByteBuffer.wrap(c.readFullReply().get(0).payload());
            one.getInt();
            assertEquals(32768, one.getInt());
            assertEquals(0, one.getInt());
            assertFalse(one.hasRemaining());
        }
    }

    @Test
    void blockStatusOnADeviceWithoutAllocationReportsAllData() throws Exception {
        InetSocketAddress addr = start(device("n", tk -> new NullDevice(tk.kernel, "null", 4 * MiB, 0)));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("n");
            c.request(0, CMD_BLOCK_STATUS, 1, 0, 4 * MiB, null);
            ByteBuffer b = ByteBuffer.wrap(c.readFullReply().get(0).payload());
            b.getInt();
            assertEquals(4 * MiB, b.getInt());
            assertEquals(0, b.getInt());
            // a structured read of a device without a map is all data
            c.request(0, CMD_READ, 2, 0, 8192, null);
            List<NbdTestClient.Reply> chunks = c.readFullReply();
            assertEquals(1, chunks.size());
            assertEquals(REPLY_TYPE_OFFSET_DATA, chunks.get(0).type());
            // fast zero is not fast here: ENOTSUP at once
            assertEquals(ENOTSUP, c.commandSync(CMD_WRITE_ZEROES, CMD_FLAG_FAST_ZERO, 0, 4096));
            assertEquals(0, c.commandSync(CMD_WRITE_ZEROES, 0, 0, 4096));
        }
    }

    // ---- bad requests --------------------------------------------------------------------------

    @Test
    void badRequestsGetTheErrorsTheSpecPrescribes() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.go("a");
            // beyond the end
            assertEquals(ENOSPC, c.writeSync(MiB - 512, new byte[1024], 0));
            assertEquals(ENOSPC, c.commandSync(CMD_WRITE_ZEROES, 0, MiB, 512));
            assertEquals(EINVAL, c.commandSync(CMD_TRIM, 0, MiB - 512, 1024));
            assertEquals(EINVAL, c.commandSync(CMD_CACHE, 0, 2 * MiB, 512));
            c.request(0, CMD_READ, 20, MiB, 512, null);
            assertEquals(EINVAL, NbdTestClient.errorOf(c.readFullReply()));
            c.request(0, CMD_READ, 21, -512L, 512, null); // offset beyond 2^63
            assertEquals(EINVAL, NbdTestClient.errorOf(c.readFullReply()));
            // a READ or WRITE beyond the maximum payload the client asked for
            c.request(0, CMD_READ, 22, 0, server.exports().get(0).maximumPayload() + 1L, null);
            assertEquals(EINVAL, NbdTestClient.errorOf(c.readFullReply()));
            // unknown command, unknown flag, flags not valid for the command
            assertEquals(EINVAL, c.commandSync(42, 0, 0, 512));
            assertEquals(EINVAL, c.commandSync(CMD_TRIM, 1 << 9, 0, 512));
            assertEquals(EINVAL, c.commandSync(CMD_TRIM, CMD_FLAG_NO_HOLE, 0, 512));
            assertEquals(EINVAL, c.commandSync(CMD_FLUSH, CMD_FLAG_REQ_ONE, 0, 0));
            assertEquals(EINVAL, c.commandSync(CMD_CACHE, CMD_FLAG_DF, 0, 512));
            assertEquals(EINVAL, c.writeSync(0, new byte[512], CMD_FLAG_FAST_ZERO));
            // flush with a range, block status without a metadata context
            assertEquals(EINVAL, c.commandSync(CMD_FLUSH, 0, 0, 512));
            assertEquals(EINVAL, c.commandSync(CMD_BLOCK_STATUS, 0, 0, 512));
            // after all that, the connection still works
            byte[] data = pattern(4096, 8);
            assertEquals(0, c.writeSync(0, data, 0));
            assertArrayEquals(data, c.readSync(0, 4096));
        }
    }

    @Test
    void structuredReadErrorsUseAnErrorChunk() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("a");
            c.request(CMD_FLAG_DF, CMD_READ, 30, 0, 512, null); // DF is not advertised
            List<NbdTestClient.Reply> chunks = c.readFullReply();
            assertEquals(1, chunks.size());
            assertEquals(REPLY_TYPE_ERROR, chunks.get(0).type());
            assertEquals(EINVAL, chunks.get(0).error());
            assertTrue(chunks.get(0).done());
            assertEquals(EINVAL, c.commandSync(CMD_BLOCK_STATUS, 0, MiB, 512));
            assertEquals(EINVAL, c.commandSync(CMD_BLOCK_STATUS, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE, 0, 512));
        }
    }

    @Test
    void readOnlyExportRefusesWritesWithEperm() throws Exception {
        InetSocketAddress addr = start(memory("ro", MiB, true, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.go("ro");
            assertEquals(EPERM, c.writeSync(0, new byte[4096], 0));
            assertEquals(EPERM, c.commandSync(CMD_TRIM, 0, 0, 4096));
            assertEquals(EPERM, c.commandSync(CMD_WRITE_ZEROES, 0, 0, 4096));
            assertEquals(0, c.commandSync(CMD_FLUSH, 0, 0, 0));
            assertArrayEquals(new byte[4096], c.readSync(0, 4096));
        }
    }

    @Test
    void oversizedWritePayloadIsRefusedAndSkippedOrTheConnectionCloses() throws Exception {
        InetSocketAddress addr = start(memory("a", 128 * MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.go("a");
            // 40 MiB > the 32 MiB maximum: refused, skipped without being stored, connection continues
            c.request(0, CMD_WRITE, 40, 0, 40 * MiB, null);
            inBackground(() -> c.write(ByteBuffer.allocate((int) (40 * MiB)))).await();
            assertEquals(EINVAL, NbdTestClient.errorOf(c.readFullReply()));
            byte[] data = pattern(4096, 9);
            assertEquals(0, c.writeSync(0, data, 0));
            assertArrayEquals(data, c.readSync(0, 4096));
        }
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.go("a");
            // 3 GiB cannot reasonably be skipped: error reply, then the server closes
            c.request(0, CMD_WRITE, 41, 0, 3L << 30, null);
            NbdTestClient.Reply r = c.readReply();
            assertEquals(41, r.cookie());
            assertEquals(EINVAL, r.error());
            assertTrue(c.readsEof());
        }
    }

    // ---- concurrency ---------------------------------------------------------------------------

    @Test
    void repliesLeaveOutOfOrderAndDiscWaitsForInFlightRequests() throws Exception {
        long gatedSector = 2048;
        GatedDevice[] gate = new GatedDevice[1];
        InetSocketAddress addr = start(device("g", tk -> gate[0] = new GatedDevice(tk.kernel, "gated", 4 * MiB,
                gatedSector)));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.go("g");
            c.request(0, CMD_READ, 100, gatedSector * 512, 4096, null); // held by the device
            gate[0].arrived.await();
            c.request(0, CMD_READ, 101, 0, 4096, null);
            assertEquals(101, c.readReply().cookie(), "the later, fast request is answered first");
            c.request(0, CMD_DISC, 102, 0, 0, null);
            gate[0].open();
            NbdTestClient.Reply slow = c.readReply();
            assertEquals(100, slow.cookie(), "DISC still answers the request in flight");
            assertEquals(0, slow.error());
            assertEquals(4096, slow.payload().length);
            assertTrue(c.readsEof());
        }
    }

    @Test
    void manyRequestsInFlightBeyondTheBoundAllComplete() throws Exception {
        InetSocketAddress addr = start(memory("a", 16 * MiB, false, ""));
        try (NbdTestClient c = new NbdTestClient(addr).greet()) {
            c.goStructured("a");
            int n = 300; // more than the 64 in-flight bound: the reader waits, nothing is lost
            ByteBuffer all = ByteBuffer.allocate(n * (REQUEST_HEADER_BYTES + 4096));
            for (int i = 0; i < n; i++) {
                byte[] data = pattern(4096, 1000 + i);
                all.putInt(REQUEST_MAGIC).putShort((short) 0).putShort((short) CMD_WRITE).putLong(i)
                        .putLong(i * 4096L).putInt(4096).put(data);
            }
            Completion sent = inBackground(() -> c.write(all.flip()));
            boolean[] seen = new boolean[n];
            for (int i = 0; i < n; i++) {
                NbdTestClient.Reply r = c.readReply();
                assertEquals(0, r.error());
                assertFalse(seen[(int) r.cookie()]);
                seen[(int) r.cookie()] = true;
            }
            sent.await();
            for (int i = 0; i < n; i += 37) {
                assertArrayEquals(pattern(4096, 1000 + i), c.readSync(i * 4096L, 4096));
            }
        }
    }

    @Test
    void misbehavingClientsDoNotDisturbAWellBehavedOne() throws Exception {
        InetSocketAddress addr = start(memory("a", 32 * MiB, false, ""));
        long freeBefore = tk.kernel.pages().freePages();
        try (NbdTestClient good = new NbdTestClient(addr).greet()) {
            good.goStructured("a");
            byte[] first = pattern((int) MiB, 20);
            assertEquals(0, good.writeSync(0, first, 0));

            // 1. garbage after the handshake: that connection closes
            try (NbdTestClient garbage = new NbdTestClient(addr).greet()) {
                garbage.go("a");
                garbage.write(ByteBuffer.wrap(pattern(4096, 21)));
                assertTrue(garbage.readsEof());
            }
            // 2. garbage instead of an option
            try (NbdTestClient garbage = new NbdTestClient(addr).greet()) {
                garbage.write(ByteBuffer.wrap(pattern(64, 22)));
                assertTrue(garbage.readsEof());
            }
            // 3. a huge payload: refused, closed
            try (NbdTestClient huge = new NbdTestClient(addr).greet()) {
                huge.go("a");
                huge.request(0, CMD_WRITE, 1, 0, 0xfffff000L, null);
                assertEquals(EINVAL, huge.readReply().error());
                assertTrue(huge.readsEof());
            }
            // 4. a client vanishing in the middle of a 4 MiB write (one bio already submitted)
            NbdTestClient vanish = new NbdTestClient(addr).greet();
            vanish.go("a");
            vanish.request(0, CMD_WRITE, 2, 8 * MiB, 4 * MiB, null);
            vanish.write(ByteBuffer.wrap(pattern((int) (MiB + 300 * 1024), 23)));
            vanish.close();

            byte[] second = pattern((int) (2 * MiB), 24);
            assertEquals(0, good.writeSync(MiB, second, CMD_FLAG_FUA));
            assertArrayEquals(first, good.readSync(0, (int) MiB));
            assertArrayEquals(second, good.readSync(MiB, (int) (2 * MiB)));
        }
        server.close();
        assertEquals(0, server.connectionCount());
        // The server's close also returned its bio set's slab pages, so at least as many are free as at start.
        assertTrue(tk.kernel.pages().freePages() >= freeBefore, "every payload page is back in the arena: "
                + tk.kernel.pages().freePages() + " free, " + freeBefore + " before");
        assertEquals(0, server.bioSet().outstanding(), "every bio of the server's set came back");
    }

    @Test
    void serverCloseDrainsOpenConnections() throws Exception {
        InetSocketAddress addr = start(memory("a", MiB, false, ""));
        NbdTestClient idle = new NbdTestClient(addr).greet();
        idle.go("a");
        NbdTestClient haggling = new NbdTestClient(addr).greet();
        assertEquals(0, idle.writeSync(0, new byte[512], 0));
        server.close();
        assertTrue(idle.readsEof());
        assertTrue(haggling.readsEof());
        idle.close();
        haggling.close();
    }
}
