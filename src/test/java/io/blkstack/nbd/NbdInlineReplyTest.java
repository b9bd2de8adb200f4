package io.blkstack.nbd;

import static io.blkstack.nbd.NbdProtocol.*;
import static org.junit.jupiter.api.Assertions.*;

import io.blkstack.block.MemoryDevice;
import io.blkstack.block.TestKernel;
import io.blkstack.kernel.Faults;
import io.blkstack.kernel.Policies;
import io.blkstack.kernel.PolicySwitch;
import io.blkstack.kernel.Task;
import io.blkstack.mem.NativeCalls;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Issue 16's inline replies (policy switch {@code inline-reply}): a connection's reader sends the
 * replies that are ready before it blocks on a read, with a send that never waits, and leaves
 * whatever the transport does not take to the writer. A memory device with no latency completes
 * each bio on the submitting task, the reader, so which task sends what is deterministic here.
 */
class NbdInlineReplyTest {

    private static final int MiB = 1 << 20;

    private TestKernel tk;
    private NbdServer server;

    @AfterEach
    void tearDown() {
        ServerTeardown.close(server, tk);
    }

    private void start(boolean inline) throws IOException {
        start(inline ? "on" : PolicySwitch.LEGACY);
    }

    private void start(String inlineReply) throws IOException {
        Policies policies = Policies.defaults().with(PolicySwitch.INLINE_REPLY, inlineReply);
        tk = new TestKernel("nbd-inline", 16L * MiB, policies, Faults.NONE);
        server = new NbdServer(tk.kernel, List.of(new Export("x", new MemoryDevice(tk.kernel, "mem", 4L * MiB, 0), false, "")),
                new InetSocketAddress("127.0.0.1", 0));
    }

    private static byte[] pattern(int length, int seed) {
        byte[] b = new byte[length];
        for (int i = 0; i < length; i++) {
            b[i] = (byte) (i * 31 + seed + (i >>> 12));
        }
        return b;
    }

    private static ByteBuffer request(int command, long cookie, long offset, int length, byte[] payload) {
        ByteBuffer b = ByteBuffer.allocate(REQUEST_HEADER_BYTES + (payload == null ? 0 : payload.length));
        b.putInt(REQUEST_MAGIC).putShort((short) 0).putShort((short) command).putLong(cookie).putLong(offset).putInt(length);
        if (payload != null) {
            b.put(payload);
        }
        return b.flip();
    }

    /** Reads a simple reply's header from the in-process client and checks it. */
    private static void expectReply(InProcessClient client, long cookie) throws IOException {
        ByteBuffer h = ByteBuffer.allocate(16);
        client.receive(h);
        h.flip();
        assertEquals(SIMPLE_REPLY_MAGIC, h.getInt());
        assertEquals(0, h.getInt(), "error of request " + cookie);
        assertEquals(cookie, h.getLong());
    }

    private long counter(String name) {
        return tk.kernel.counters().value(name);
    }

    /**
     * Proves the hand-over: a WRITE's 16-byte reply fits the empty 64 KiB reply pipe, so the reader
     * sends it whole; a 1 MiB READ's reply does not, so the reader sends the first 64 KiB without
     * waiting and leaves the rest to the writer, which then blocks on the full pipe (observed) while
     * the reader is free. The client gets the header and the bytes written, in order.
     */
    @Test
    void aReplyTheReaderCannotSendWholeGoesOnFromTheWriter() throws Exception {
        start(true);
        InProcessClient client = server.connectInProcess("x");
        awaitIdleWriter();
        byte[] data = pattern(MiB, 5);
        client.send(request(CMD_WRITE, 1, MiB, MiB, data));
        expectReply(client, 1);

        client.send(request(CMD_READ, 2, MiB, MiB, null));
        Task writer = ServerTeardown.writerTask(tk, server, 30_000_000_000L);
        assertNotNull(writer.awaitWait(what -> what instanceof BytePipe, 30_000_000_000L),
                "the writer never took over the READ's reply: " + server.describeState());
        // Both counts are final here: the reader counted the WRITE's reply before it read the READ,
        // and the hand-over before it woke the writer.
        assertEquals(1, counter("nbd.reader-replies"), "the WRITE's reply was not sent by the reader");
        assertEquals(1, counter("nbd.reader-handovers"), "the READ's reply was not handed to the writer");

        expectReply(client, 2);
        ByteBuffer got = ByteBuffer.allocate(MiB);
        client.receive(got);
        assertArrayEquals(data, got.array(), "the reply's bytes, sent by two tasks, are the bytes written");
        client.shutdownOutput();
        client.awaitEnd();
    }

    /** Proves the switch: with {@code inline-reply=legacy} the reader sends nothing and the writer every reply. */
    @Test
    void withTheSwitchOffTheWriterSendsEveryReply() throws Exception {
        start(false);
        InProcessClient client = server.connectInProcess("x");
        byte[] data = pattern(MiB, 9);
        client.send(request(CMD_WRITE, 1, 0, MiB, data));
        expectReply(client, 1);
        client.send(request(CMD_READ, 2, 0, MiB, null));
        expectReply(client, 2);
        ByteBuffer got = ByteBuffer.allocate(MiB);
        client.receive(got);
        assertArrayEquals(data, got.array());
        assertEquals(0, counter("nbd.reader-replies"));
        assertEquals(0, counter("nbd.reader-handovers"));
        client.shutdownOutput();
        client.awaitEnd();
    }

    /**
     * Proves the path over a real socket (the test JVM, like the jar, lets the server read the
     * socket's descriptor and call {@code sendmsg}): the reader sends WRITE replies itself; a 4 MiB
     * READ (more page views than one gathering write takes) is handed to the writer unsent; and a
     * client with a 64 KiB receive buffer that sends eight 1 MiB READs before it reads anything
     * still gets every byte in order, whichever task sent which part.
     */
    @Test
    void overASocketTheReaderSendsAndAClientThatReadsLateGetsEverything() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(NativeCalls.onLinux() && SendNow.available());
        start(true);
        server.start();
        byte[][] data = {pattern(MiB, 1), pattern(MiB, 2), pattern(MiB, 3), pattern(MiB, 4)};
        try (NbdTestClient client = new NbdTestClient(server.localAddress(), 64 * 1024).greet()) {
            client.go("x");
            awaitIdleWriter();
            for (int i = 0; i < 4; i++) {
                assertEquals(0, client.writeSync((long) i * MiB, data[i], 0));
            }
            assertTrue(counter("nbd.reader-replies") >= 3, "WRITE replies were not sent by the reader: "
                    + counter("nbd.reader-replies"));
            assertEquals(0, counter("nbd.reader-handovers"));
            byte[] whole = client.readSync(0, 4 * MiB);
            for (int i = 0; i < 4; i++) {
                assertArrayEquals(data[i], java.util.Arrays.copyOfRange(whole, i * MiB, (i + 1) * MiB), "MiB " + i);
            }
            assertEquals(1, counter("nbd.reader-handovers"), "the 4 MiB READ's reply was not handed to the writer");
            for (int i = 0; i < 8; i++) {
                client.request(0, CMD_READ, 100 + i, (long) (i % 4) * MiB, MiB, null);
            }
            for (int i = 0; i < 8; i++) {
                NbdTestClient.Reply r = client.readReply();
                assertEquals(0, r.error());
                int which = (int) (r.cookie() - 100);
                assertArrayEquals(data[which % 4], r.payload(), "READ " + which + " (reader replies "
                        + counter("nbd.reader-replies") + ", hand-overs " + counter("nbd.reader-handovers") + ")");
            }
        }
    }

    /**
     * Proves the send at once after a large READ: the client writes a 64 KiB READ and DISC in one
     * segment, so the reader parses both from one read of the socket and ends without blocking
     * again. Under {@code on} the reader sent the READ's reply itself, right after serving it;
     * under {@code before-read} it never got to a blocking read, so the writer sent it.
     */
    @ParameterizedTest
    @ValueSource(strings = {"on", "before-read"})
    void aLargeReadIsSentByTheReaderAtOnce(String inlineReply) throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(NativeCalls.onLinux() && SendNow.available());
        start(inlineReply);
        server.start();
        int length = (int) NbdConnection.SEND_AT_ONCE_BYTES;
        try (NbdTestClient client = new NbdTestClient(server.localAddress()).greet()) {
            client.go("x");
            awaitIdleWriter();
            ByteBuffer both = ByteBuffer.allocate(2 * REQUEST_HEADER_BYTES);
            both.put(request(CMD_READ, 5, MiB, length, null)).put(request(CMD_DISC, 6, 0, 0, null));
            client.write(both.flip());
            ByteBuffer h = client.read(16);
            assertEquals(SIMPLE_REPLY_MAGIC, h.getInt());
            assertEquals(0, h.getInt());
            assertEquals(5, h.getLong());
            assertArrayEquals(new byte[length], client.read(length).array());
            assertTrue(client.readsEof(), "DISC ends the connection");
        }
        server.close(); // the connection's tasks are over: the counters are final
        assertEquals(inlineReply.equals("on") ? 1 : 0, counter("nbd.reader-replies"), "replies the reader sent");
        assertEquals(0, counter("nbd.reader-handovers"));
    }

    /**
     * Waits until the writer sleeps for work: from then on only a reply left by the reader wakes
     * it, so which task sends which reply no longer depends on when the writer's thread first ran.
     */
    private void awaitIdleWriter() {
        Task writer = ServerTeardown.writerTask(tk, server, 30_000_000_000L);
        assertNotNull(writer.awaitWait(what -> what instanceof NbdConnection, 30_000_000_000L),
                "the writer never waited for work: " + server.describeState());
    }
}
