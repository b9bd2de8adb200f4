package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.bio.Bio;
import io.blkstack.bio.BioOp;
import io.blkstack.bio.BioSet;
import io.blkstack.bio.ReadReference;
import io.blkstack.block.BlockDevice;
import io.blkstack.block.FileDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.dm.MappedDevice;
import io.blkstack.dm.Table;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.mem.Gfp;
import io.blkstack.mem.Page;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Reads by reference (issue 16, bullet 1; DESIGN.md section 4): a READ over a stack of remap
 * targets on buffered files is held by the file devices as extents and sent with sendfile.
 * Proves, over a real TCP connection: data through every remap target read by reference equals
 * what was written and what the same stack returns with references off (policy
 * {@code read-references=legacy}), for simple and structured replies and unaligned ranges;
 * references are really used where the stack passes them and never where a target must see the
 * data (crypt, flakey); and, over an in-process connection whose reply pipe the test does not
 * drain, that a READ whose payload is still being sent keeps its I/O in flight, so a mechanism
 * that waits for in-flight I/O (dm suspend) waits for the send. Every test ends by closing the
 * server and the kernel, which checks that every bio and page came back.
 */
class NbdReadReferenceTest {

    private static final long MiB = 1L << 20;
    private static final long FILE_BYTES = 8 * MiB;
    private static final String KEY = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    @TempDir
    Path dir;

    private TestKernel tk;
    private NbdServer server;

    @AfterEach
    void tearDown() {
        ServerTeardown.close(server, tk);
    }

    /** A stack over files {@code a} and {@code b}: null table for the bare file {@code a}; whether it passes references. */
    record Stack(String name, String table, String inner, String innerMessage, boolean passes) {
        Stack(String name, String table, String inner, boolean passes) {
            this(name, table, inner, null, passes);
        }

        @Override
        public String toString() {
            return name;
        }
    }

    static Stream<Stack> stacks() {
        long sectors = FILE_BYTES >>> Bio.SECTOR_SHIFT;
        long half = sectors / 2;
        return Stream.of(
                new Stack("file", null, null, true),
                new Stack("linear", "0 " + half + " linear a 0\n" + half + " " + half + " linear b 2048\n", null, true),
                new Stack("striped", "0 " + (sectors - 256) + " striped 2 128 a 0 b 8\n", null, true),
                new Stack("linear over striped", "0 " + (sectors - 512) + " linear s 256\n",
                        "0 " + (sectors - 256) + " striped 2 64 a 0 b 8\n", true),
                new Stack("mirror", "0 " + sectors + " mirror core 1 64 2 a 0 b 0\n", null, true),
                new Stack("log-writes", "0 " + sectors + " log-writes a b\n", null, true),
                new Stack("thin", "0 " + sectors + " thin s 0\n", "0 " + sectors + " thin-pool a b 128 0\n", "create_thin 0", false),
                new Stack("snapshot-origin", "0 " + sectors + " snapshot-origin a\n", null, true),
                new Stack("snapshot", "0 " + sectors + " snapshot a b P 128\n", null, false),
                new Stack("crypt", "0 " + sectors + " crypt aes-xts-plain64 " + KEY + " 0 a 0\n", null, false),
                new Stack("flakey up", "0 " + sectors + " flakey a 0 1 0\n", null, false),
                new Stack("linear over crypt", "0 " + (sectors - 256) + " linear s 256\n",
                        "0 " + sectors + " crypt aes-xts-plain64 " + KEY + " 0 a 0\n", false));
    }

    static Stream<Arguments> stacksAndPolicies() {
        return stacks().flatMap(s -> Stream.of(Arguments.of(s, true), Arguments.of(s, false)));
    }

    /** Builds the stack's device on a fresh kernel (references on or off). */
    private BlockDevice build(Stack stack, boolean references) throws Exception {
        Policies policies = references ? Policies.defaults()
                : Policies.defaults().with(PolicySwitch.READ_REFERENCES, PolicySwitch.LEGACY);
        tk = new TestKernel("nbd-read-reference", 128 * MiB, policies, Faults.NONE);
        FileDevice.Options options = FileDevice.Options.defaults().withCreate(true);
        Map<String, BlockDevice> devices = new HashMap<>();
        devices.put("a", FileDevice.open(tk.kernel, "a", dir.resolve("a.img"), FILE_BYTES, options));
        if (stack.table() == null) {
            return devices.get("a");
        }
        devices.put("b", FileDevice.open(tk.kernel, "b", dir.resolve("b.img"), FILE_BYTES, options));
        if (stack.inner() != null) {
            MappedDevice inner = new MappedDevice(tk.kernel, "s", Table.parse(tk.kernel, "s", stack.inner(), devices::get));
            devices.put("s", inner);
            if (stack.innerMessage() != null) {
                inner.message(0, stack.innerMessage().split(" "));
            }
        }
        return new MappedDevice(tk.kernel, "dm", Table.parse(tk.kernel, "dm", stack.table(), devices::get));
    }

    private InetSocketAddress serve(BlockDevice device) throws IOException {
        server = new NbdServer(tk.kernel, List.of(new Export("x", device, false, "")), new InetSocketAddress("127.0.0.1", 0));
        server.start();
        return server.localAddress();
    }

    private static byte[] pattern(int length, long seed) {
        byte[] b = new byte[length];
        new Random(seed).nextBytes(b);
        return b;
    }

    /**
     * Proves data read by reference equals what was written (and so what pages give): writes 3 MiB
     * of a pattern (leaving the rest of the device a hole), then reads aligned 1 MiB, unaligned,
     * and data-and-hole ranges with simple and structured replies; and proves references were used
     * exactly where the stack passes them and the policy allows them.
     */
    @ParameterizedTest(name = "{0}, references {1}")
    @MethodSource("stacksAndPolicies")
    void readsThroughTheStackReturnWhatWasWritten(Stack stack, boolean references) throws Exception {
        BlockDevice device = build(stack, references);
        assertEquals(stack.passes(), device.readsByReference(), "capability of " + stack);
        InetSocketAddress address = serve(device);
        byte[] data = pattern((int) (3 * MiB), stack.name().hashCode());
        try (NbdTestClient c = new NbdTestClient(address).greet()) {
            c.go("x");
            for (int i = 0; i < 3; i++) {
                assertEquals(0, c.writeSync(i * MiB, Arrays.copyOfRange(data, (int) (i * MiB), (int) ((i + 1) * MiB)), 0));
            }
            for (int i = 0; i < 3; i++) {
                assertArrayEquals(Arrays.copyOfRange(data, (int) (i * MiB), (int) ((i + 1) * MiB)), c.readSync(i * MiB, (int) MiB),
                        "aligned MiB " + i);
            }
            assertArrayEquals(Arrays.copyOfRange(data, 4097, 4097 + 700_001), c.readSync(4097, 700_001), "unaligned");
            byte[] tail = c.readSync(3 * MiB - 5000, 9000);
            assertArrayEquals(Arrays.copyOfRange(data, (int) (3 * MiB - 5000), (int) (3 * MiB)), Arrays.copyOf(tail, 5000));
            if (!stack.name().contains("crypt")) { // crypt decrypts a never-written range to noise
                assertArrayEquals(new byte[4000], Arrays.copyOfRange(tail, 5000, 9000), "never written: zeroes");
            }
        }
        try (NbdTestClient c = new NbdTestClient(address).greet()) {
            c.goStructured("x");
            c.request(0, CMD_READ, 7, 2 * MiB + 123, (int) (2 * MiB), null);
            byte[] got = NbdTestClient.assemble(c.readFullReply(), 2 * MiB + 123, (int) (2 * MiB));
            byte[] expected = new byte[(int) (2 * MiB)];
            System.arraycopy(data, (int) (2 * MiB + 123), expected, 0, (int) (MiB - 123));
            int checked = stack.name().contains("crypt") ? (int) (MiB - 123) : expected.length;
            assertArrayEquals(Arrays.copyOf(expected, checked), Arrays.copyOf(got, checked), "structured, data then hole");
        }
        long held = tk.kernel.counters().value("file.read-references");
        long sent = tk.kernel.counters().value("nbd.read-reference-bytes");
        if (references && stack.passes()) {
            assertTrue(held > 0, "no READ was held by reference through " + stack);
            assertTrue(sent >= 3 * MiB, "only " + sent + " bytes were sent by reference through " + stack);
        } else {
            assertEquals(0, held, "READs held by reference through " + stack + " (references " + references + ")");
            assertEquals(0, sent);
        }
    }

    /**
     * Proves {@code read-references=large}: over a bare file, READs below 64 KiB take pages (the
     * counters stay put), a READ of exactly 64 KiB and one of 1 MiB are held by reference, and
     * every read returns the written bytes.
     */
    @Test
    void underLargeOnlyReadsOfAtLeast64KiBAreSentByReference() throws Exception {
        tk = new TestKernel("nbd-read-reference", 128 * MiB,
                Policies.defaults().with(PolicySwitch.READ_REFERENCES, "large"), Faults.NONE);
        BlockDevice device = FileDevice.open(tk.kernel, "a", dir.resolve("a.img"), FILE_BYTES,
                FileDevice.Options.defaults().withCreate(true));
        InetSocketAddress address = serve(device);
        byte[] data = pattern((int) (2 * MiB), 64);
        try (NbdTestClient c = new NbdTestClient(address).greet()) {
            c.go("x");
            assertEquals(0, c.writeSync(0, data, 0));
            int small = 64 * 1024 - 512;
            assertArrayEquals(Arrays.copyOfRange(data, 512, 512 + 4096), c.readSync(512, 4096));
            assertArrayEquals(Arrays.copyOfRange(data, 4096, 4096 + small), c.readSync(4096, small));
            assertEquals(0, tk.kernel.counters().value("file.read-references"), "a READ below 64 KiB was held by reference");
            assertEquals(0, tk.kernel.counters().value("nbd.read-reference-bytes"));
            int large = 64 * 1024;
            assertArrayEquals(Arrays.copyOfRange(data, 8192, 8192 + large), c.readSync(8192, large));
            assertEquals(large, tk.kernel.counters().value("nbd.read-reference-bytes"), "the 64 KiB READ took pages");
            assertArrayEquals(Arrays.copyOfRange(data, (int) MiB, (int) (2 * MiB)), c.readSync(MiB, (int) MiB));
            assertEquals(large + MiB, tk.kernel.counters().value("nbd.read-reference-bytes"), "the 1 MiB READ took pages");
        }
    }

    /**
     * Proves a READ by reference of a range past the end of its file (the file was shortened
     * under the device, as another program may do) is sent as zeros after the data that is
     * left: sendfile stops at the end of the file, and the reply writer sends zeros for the rest.
     */
    @Test
    void aReferencePastTheEndOfAShortenedFileIsSentAsZeros() throws Exception {
        tk = new TestKernel("nbd-read-reference", 128 * MiB, Policies.defaults(), Faults.NONE);
        Path file = dir.resolve("a.img");
        BlockDevice device = FileDevice.open(tk.kernel, "a", file, FILE_BYTES, FileDevice.Options.defaults().withCreate(true));
        InetSocketAddress address = serve(device);
        byte[] data = pattern((int) (2 * MiB), 7);
        try (NbdTestClient c = new NbdTestClient(address).greet()) {
            c.go("x");
            assertEquals(0, c.writeSync(0, data, 0));
            try (FileChannel other = FileChannel.open(file, StandardOpenOption.WRITE)) {
                other.truncate(MiB + 4096);
            }
            long before = tk.kernel.counters().value("nbd.read-reference-bytes");
            byte[] got = c.readSync(MiB - 8192, (int) MiB);
            assertEquals(before + MiB, tk.kernel.counters().value("nbd.read-reference-bytes"), "the READ took pages");
            assertArrayEquals(Arrays.copyOfRange(data, (int) (MiB - 8192), (int) (MiB + 4096)), Arrays.copyOf(got, 12288),
                    "the bytes still in the file");
            assertArrayEquals(new byte[(int) MiB - 12288], Arrays.copyOfRange(got, 12288, (int) MiB), "past the end: zeros");
        }
    }

    /**
     * Proves the targets that must see the data refuse the offer on the bio they map: a READ
     * armed by reference and sent through crypt or flakey reaches the file without the offer
     * (the file device fills its pages), and the READ completes from pages.
     */
    @ParameterizedTest(name = "{0}")
    @MethodSource("stacks")
    void transformingTargetsClearTheMark(Stack stack) throws Exception {
        if (stack.passes()) {
            return; // covered above; this one is about the targets that refuse
        }
        BlockDevice device = build(stack, true);
        BioSet set = new BioSet(tk.kernel, "test", 2, 2, null, false);
        ReadReference reference = new ReadReference();
        Bio bio = set.alloc(Gfp.NOIO, 1);
        Page page = tk.kernel.pages().alloc(Gfp.NOIO);
        try {
            bio.addPage(page, Page.SIZE, 0);
            boolean[] told = new boolean[1];
            reference.arm(bio, r -> told[0] = true, null);
            io.blkstack.kernel.Completion done = new io.blkstack.kernel.Completion("read");
            bio.init(device, BioOp.READ, 0, 0);
            bio.setEndIo(b -> done.complete());
            io.blkstack.block.Submit.submitBio(bio);
            done.await();
            assertNull(bio.readReference(), "the mark survived " + stack);
            assertFalse(told[0], "the READ through " + stack + " was completed by reference");
            assertEquals(0, reference.extentCount());
            assertEquals(0, tk.kernel.counters().value("file.read-references"));
        } finally {
            bio.put();
            tk.kernel.pages().free(page);
            set.close();
        }
    }

    /**
     * Proves why thin does not pass references: the hold of a READ ends when its send returns, but
     * a local peer's socket keeps references to the file's pages until the client reads them. A
     * pool of two 64 KiB blocks over files serves volume 0 (block 0, all 'A') and volume 1 (block
     * 1). A client of volume 0 asks for its block and reads nothing; the reply fits in the socket
     * buffers, so the server's send returns and the READ completes. Then another connection
     * discards that block and commits, and volume 1 writes 'C' to a new block, which can only be
     * the block just freed. When the first client finally reads its reply, it must see 'A' (or
     * zeros), never volume 1's 'C'. With thin passing references, the reply carried 'C' on this
     * machine (Linux 6.18, loopback): the pages were read at the client's receive, not at the send.
     */
    @Test
    @org.junit.jupiter.api.Timeout(60)
    void aThinReadTheClientHasNotReadYetNeverShowsAnotherVolumesData() throws Exception {
        int block = 64 * 1024;
        tk = new TestKernel("nbd-read-reference-thin", 128 * MiB, Policies.defaults(), Faults.NONE);
        FileDevice.Options options = FileDevice.Options.defaults().withCreate(true);
        Map<String, BlockDevice> devices = new HashMap<>();
        devices.put("meta", FileDevice.open(tk.kernel, "meta", dir.resolve("meta.img"), 4 * MiB, options));
        devices.put("data", FileDevice.open(tk.kernel, "data", dir.resolve("data.img"), 2L * block, options));
        long blockSectors = block >>> Bio.SECTOR_SHIFT;
        MappedDevice pool = new MappedDevice(tk.kernel, "pool",
                Table.parse(tk.kernel, "pool", "0 " + 2 * blockSectors + " thin-pool meta data " + blockSectors + " 0\n",
                        devices::get));
        pool.message(0, "create_thin", "0");
        pool.message(0, "create_thin", "1");
        devices.put("pool", pool);
        MappedDevice v0 = new MappedDevice(tk.kernel, "v0", Table.parse(tk.kernel, "v0", "0 " + blockSectors + " thin pool 0\n", devices::get));
        MappedDevice v1 = new MappedDevice(tk.kernel, "v1",
                Table.parse(tk.kernel, "v1", "0 " + 2 * blockSectors + " thin pool 1\n", devices::get));
        server = new NbdServer(tk.kernel, List.of(new Export("v0", v0, false, ""), new Export("v1", v1, false, "")),
                new InetSocketAddress("127.0.0.1", 0));
        server.start();
        InetSocketAddress address = server.localAddress();
        byte[] a = new byte[block];
        Arrays.fill(a, (byte) 'A');
        byte[] c = new byte[block];
        Arrays.fill(c, (byte) 'C');
        try (NbdTestClient w0 = new NbdTestClient(address).greet(); NbdTestClient w1 = new NbdTestClient(address).greet();
                NbdTestClient reader = new NbdTestClient(address, 1 << 20).greet()) {
            w0.go("v0");
            w1.go("v1");
            reader.go("v0");
            assertEquals(0, w0.writeSync(0, a, 0));
            assertEquals(0, w1.writeSync(0, a, 0)); // volume 1 takes the pool's other block
            assertEquals(0, w0.commandSync(CMD_FLUSH, 0, 0, 0));
            assertEquals(0, w1.commandSync(CMD_FLUSH, 0, 0, 0));

            reader.request(0, CMD_READ, 42, 0, block, null); // and reads nothing yet
            awaitReadDone("v0", v0);
            assertEquals(0, w0.commandSync(CMD_TRIM, 0, 0, block));
            assertEquals(0, w0.commandSync(CMD_FLUSH, 0, 0, 0));
            assertEquals(0, w1.writeSync(block, c, 0)); // needs a block: only the one just freed is left
            assertEquals(0, w1.commandSync(CMD_FLUSH, 0, 0, 0));

            assertReplyIsOnly(reader, 42, block, 'A', "volume 0's reply", "written to volume 1 after the READ was sent");
            assertEquals(0, tk.kernel.counters().value("file.read-references"), "thin passed a reference");
        }
    }

    /**
     * Proves why snapshot does not pass references, as the thin test above: a snapshot READ of a
     * chunk not yet copied reads the origin's file. A client of the snapshot asks for chunk 0 (all
     * 'A' when the snapshot was taken) and reads nothing; after the READ completed, a write of 'C'
     * to the origin's chunk 0 copies the chunk out and overwrites it. The snapshot's reply must
     * still be 'A'. With snapshot passing references it carried the origin's new 'C'.
     */
    @Test
    @org.junit.jupiter.api.Timeout(60)
    void aSnapshotReadTheClientHasNotReadYetNeverShowsLaterOriginWrites() throws Exception {
        int chunk = 64 * 1024;
        byte[] a = new byte[chunk];
        Arrays.fill(a, (byte) 'A');
        byte[] c = new byte[chunk];
        Arrays.fill(c, (byte) 'C');
        Files.write(dir.resolve("origin.img"), a);
        tk = new TestKernel("nbd-read-reference-snapshot", 128 * MiB, Policies.defaults(), Faults.NONE);
        FileDevice.Options options = FileDevice.Options.defaults().withCreate(true);
        Map<String, BlockDevice> devices = new HashMap<>();
        devices.put("origin", FileDevice.open(tk.kernel, "origin", dir.resolve("origin.img"), 4L * chunk, options));
        devices.put("cow", FileDevice.open(tk.kernel, "cow", dir.resolve("cow.img"), 4 * MiB, options));
        long sectors = 4L * chunk >>> Bio.SECTOR_SHIFT;
        long chunkSectors = chunk >>> Bio.SECTOR_SHIFT;
        MappedDevice o = new MappedDevice(tk.kernel, "o",
                Table.parse(tk.kernel, "o", "0 " + sectors + " snapshot-origin origin\n", devices::get));
        MappedDevice snap = new MappedDevice(tk.kernel, "s",
                Table.parse(tk.kernel, "s", "0 " + sectors + " snapshot origin cow P " + chunkSectors + "\n", devices::get));
        server = new NbdServer(tk.kernel, List.of(new Export("o", o, false, ""), new Export("s", snap, false, "")),
                new InetSocketAddress("127.0.0.1", 0));
        server.start();
        InetSocketAddress address = server.localAddress();
        try (NbdTestClient writer = new NbdTestClient(address).greet();
                NbdTestClient reader = new NbdTestClient(address, 1 << 20).greet()) {
            writer.go("o");
            reader.go("s");
            reader.request(0, CMD_READ, 43, 0, chunk, null); // and reads nothing yet
            awaitReadDone("s", snap);
            assertEquals(0, writer.writeSync(0, c, 0)); // copies chunk 0 out, then overwrites it in the origin
            assertEquals(0, writer.commandSync(CMD_FLUSH, 0, 0, 0));
            assertReplyIsOnly(reader, 43, chunk, 'A', "the snapshot's reply", "written to the origin after the READ was sent");
            assertEquals(0, tk.kernel.counters().value("file.read-references"), "snapshot passed a reference");
        }
    }

    /** Waits (bounded) until export {@code name} answered a READ and {@code device} has nothing in flight. */
    private void awaitReadDone(String name, MappedDevice device) {
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (server.exportStats(name).snapshot().requests(ExportStats.Command.READ) < 1 || device.inFlight() > 0) {
            assertTrue(System.nanoTime() < deadline, "the READ never completed: " + server.describeState());
            Thread.onSpinWait();
        }
    }

    /** Reads the simple reply {@code cookie} of {@code length} bytes and checks every byte is {@code expected} or zero. */
    private static void assertReplyIsOnly(NbdTestClient client, long cookie, int length, char expected, String what,
            String otherwise) throws IOException {
        ByteBuffer reply = client.read(16 + length);
        assertEquals(SIMPLE_REPLY_MAGIC, reply.getInt());
        assertEquals(0, reply.getInt());
        assertEquals(cookie, reply.getLong());
        for (int i = 0; i < length; i++) {
            byte b = reply.get();
            assertTrue(b == expected || b == 0, "byte " + i + " of " + what + " is " + (char) b + ", " + otherwise);
        }
    }

    /**
     * Proves a reference keeps its I/O in flight until the payload has left: an in-process client
     * asks for 1 MiB through linear over a file and reads nothing, so the writer blocks in the
     * send with 64 KiB in the reply pipe (observed: the writer task waits). The linear device then
     * still counts the READ in flight, and a bounded suspend (which waits for in-flight I/O, as thin
     * block reuse and snapshot exceptions do) cannot finish. Once the client reads the reply (the
     * data it wrote, from the file), the READ completes and the suspend succeeds.
     */
    @Test
    void aReadStaysInFlightUntilItsPayloadWasSent() throws Exception {
        BlockDevice device = build(new Stack("linear", "0 8192 linear a 0\n", null, true), true);
        MappedDevice linear = (MappedDevice) device;
        byte[] data = pattern((int) MiB, 16);
        try (var channel = java.nio.channels.FileChannel.open(dir.resolve("a.img"), java.nio.file.StandardOpenOption.WRITE)) {
            channel.write(ByteBuffer.wrap(data), 0);
        }
        server = new NbdServer(tk.kernel, List.of(new Export("x", device, false, "")), new InetSocketAddress("127.0.0.1", 0));
        InProcessClient client = server.connectInProcess("x");
        ByteBuffer request = ByteBuffer.allocate(REQUEST_HEADER_BYTES);
        request.putInt(REQUEST_MAGIC).putShort((short) 0).putShort((short) CMD_READ).putLong(1).putLong(0).putInt((int) MiB)
                .flip();
        client.send(request);
        Task writer = ServerTeardown.writerTask(tk, server, 30_000_000_000L);
        assertNotNull(writer.awaitWait(what -> what instanceof BytePipe, 30_000_000_000L),
                "the writer never blocked on the full reply pipe: " + server.describeState());
        assertEquals(1, tk.kernel.counters().value("file.read-references"), "the READ was not held by reference");
        assertEquals(1, linear.inFlight(), "the READ left flight before its payload was sent");
        assertFalse(linear.suspend(50_000_000L), "suspend finished while the READ's payload was still being sent");

        ByteBuffer reply = ByteBuffer.allocate(16 + (int) MiB);
        client.receive(reply);
        reply.flip();
        assertEquals(SIMPLE_REPLY_MAGIC, reply.getInt());
        assertEquals(0, reply.getInt());
        assertEquals(1, reply.getLong());
        byte[] got = new byte[(int) MiB];
        reply.get(got);
        assertArrayEquals(data, got);
        assertTrue(linear.suspend(30_000_000_000L), "nothing in flight after the send: the suspend succeeds");
        linear.resume();
        client.shutdownOutput();
        client.awaitEnd();
    }

    /**
     * Proves the reply timeout also ends held references: with a 300 ms reply timeout, a client
     * with a 64 KiB receive buffer sends 16 READs of 1 MiB through linear over a file and reads
     * nothing; the server cuts it (the line is logged once every request of the connection has
     * returned its budget), and by then every held READ has completed: nothing is in flight in the
     * linear device, and closing the kernel finds every bio back.
     */
    @Test
    @org.junit.jupiter.api.Timeout(90)
    void theReplyTimeoutEndsHeldReferences() throws Exception {
        BlockDevice device = build(new Stack("linear", "0 16384 linear a 0\n", null, true), true);
        java.util.concurrent.BlockingQueue<String> lines = new java.util.concurrent.LinkedBlockingQueue<>();
        NbdServer.Options options = NbdServer.Options.defaults(new InetSocketAddress("127.0.0.1", 0))
                .withReplyTimeoutNanos(300_000_000L).withLog(lines::add);
        server = new NbdServer(tk.kernel, List.of(new Export("x", device, false, "")), options);
        server.start();
        try (NbdTestClient slow = new NbdTestClient(server.localAddress(), 64 * 1024).greet()) {
            slow.go("x");
            for (int i = 0; i < 16; i++) {
                slow.request(0, CMD_READ, i, (i % 8) * MiB, (int) MiB, null);
            }
            while (true) {
                String line = lines.poll(30, java.util.concurrent.TimeUnit.SECONDS);
                assertNotNull(line, "the slow client was never cut: " + server.describeState());
                if (line.contains("reply timeout")) {
                    break;
                }
            }
            assertTrue(tk.kernel.counters().value("file.read-references") > 0, "no READ was held by reference");
            assertEquals(0, ((MappedDevice) device).inFlight(), "held READs outlived the cut connection");
            assertEquals(server.budget().totalPages(), server.budget().freePages(), server.describeState());
        }
    }
}
