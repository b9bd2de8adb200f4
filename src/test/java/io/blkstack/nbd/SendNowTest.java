package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.blkstack.mem.NativeCalls;
import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The reader's non-waiting send on a real socket: what it takes, that it never waits, and its close. */
class SendNowTest {

    /** A test body given a connected loopback pair and a sender on the server's end. */
    private interface PairBody {
        void run(SocketChannel server, SocketChannel client, SendNow sender) throws IOException;
    }

    /** Runs {@code body} on a fresh loopback pair (Linux only), with a sender opened on the server's end. */
    private static void withPair(PairBody body) throws IOException {
        assumeTrue(NativeCalls.onLinux());
        try (ServerSocketChannel listener = ServerSocketChannel.open()
                .bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
                SocketChannel client = SocketChannel.open(listener.getLocalAddress());
                SocketChannel server = listener.accept()) {
            SendNow sender = SendNow.open(server);
            assertNotNull(sender, "the test JVM exports sun.nio.ch and allows native access, as the jar does");
            try {
                body.run(server, client, sender);
            } finally {
                sender.close();
            }
        }
    }

    /** Reads exactly {@code n} bytes from {@code client}. */
    private static ByteBuffer readExactly(SocketChannel client, int n) throws IOException {
        ByteBuffer in = ByteBuffer.allocate(n);
        while (in.hasRemaining()) {
            if (client.read(in) < 0) {
                throw new java.io.EOFException("stream ended after " + in.position() + " of " + n + " bytes");
            }
        }
        return in.flip();
    }

    @Test
    void sendsWhatTheSocketTakesAndStopsWhenItIsFull() throws IOException {
        withPair((server, client, sender) -> {
            // Two buffers per call, with distinct bytes, until the socket takes nothing more:
            // never waiting although the client reads nothing meanwhile.
            long total = 0;
            int calls = 0;
            byte next = 0;
            ByteBuffer[] srcs = new ByteBuffer[2];
            while (true) {
                for (int i = 0; i < 2; i++) {
                    srcs[i] = ByteBuffer.allocateDirect(64 * 1024);
                    while (srcs[i].hasRemaining()) {
                        srcs[i].put(next++);
                    }
                    srcs[i].flip();
                }
                long sent = sender.send(srcs, 0, 2);
                calls++;
                assertEquals(sent, 2 * 64 * 1024 - srcs[0].remaining() - srcs[1].remaining(),
                        "positions advance by what was sent");
                total += sent;
                if (sent < 2 * 64 * 1024) {
                    break; // the socket buffers are full: a blocking write would wait here
                }
                assertTrue(calls < 10_000, "a socket that never fills");
            }
            assertTrue(total > 0, "the first send went out");
            // The client reads exactly the bytes sent, in order.
            ByteBuffer in = readExactly(client, (int) total);
            byte expect = 0;
            for (int i = 0; i < total; i++) {
                assertEquals(expect++, in.get(), "byte " + i);
            }
            sender.close();
            sender.close(); // idempotent
            assertEquals(-1, sender.send(new ByteBuffer[] {ByteBuffer.allocateDirect(1)}, 0, 1), "closed: refused");
        });
    }

    @Test
    void refusesHeapBuffersWithoutTouchingThem() throws IOException {
        withPair((server, client, sender) -> {
            ByteBuffer direct = ByteBuffer.allocateDirect(4).put(new byte[] {1, 2, 3, 4}).flip();
            ByteBuffer heap = ByteBuffer.wrap(new byte[] {5, 6});
            assertEquals(-1, sender.send(new ByteBuffer[] {direct, heap}, 0, 2));
            assertEquals(4, direct.remaining());
            assertEquals(2, heap.remaining());
            assertEquals(4, sender.send(new ByteBuffer[] {direct}, 0, 1));
            assertArrayEquals(new byte[] {1, 2, 3, 4}, readExactly(client, 4).array());
        });
    }

    /**
     * Proves a close during a send keeps the duplicate open until the send ends, and closes it
     * then (the count in {@link SendNow}): otherwise the number could be reused by another client's
     * socket while the send still uses it.
     */
    @Test
    void aCloseDuringASendClosesTheDuplicateWhenTheSendEnds() throws IOException {
        withPair((server, client, sender) -> {
            Path descriptor = Path.of("/proc/self/fd/" + sender.descriptor());
            assertTrue(Files.exists(descriptor, LinkOption.NOFOLLOW_LINKS));
            assertTrue(sender.enterForTest());
            sender.close();
            assertTrue(Files.exists(descriptor, LinkOption.NOFOLLOW_LINKS), "closed under a send");
            assertFalse(sender.enterForTest(), "a send after the close began");
            sender.exitForTest();
            assertFalse(Files.exists(descriptor, LinkOption.NOFOLLOW_LINKS), "not closed when the send ended");
        });
    }

    @Test
    @Timeout(60)
    void theTransportRetiresItsSenderBeforeTheChannelCloses() throws IOException {
        withPair((server, client, unused) -> {
            SocketTransport transport = new SocketTransport(server);
            assertTrue(transport.enableWriteNow());
            ByteBuffer[] one = {ByteBuffer.allocateDirect(3).put(new byte[] {7, 8, 9}).flip()};
            assertEquals(3, transport.writeNow(one, 0, 1));
            unused.close(); // the pair's own sender: its duplicate must not keep the socket open either
            transport.close();
            one[0].clear();
            assertEquals(-1, transport.writeNow(one, 0, 1), "after close nothing is sent on any descriptor");
            assertFalse(transport.enableWriteNow(), "a closed transport makes no sender");
            // The client sees the three bytes, then the end of the stream: the duplicate closed too.
            assertArrayEquals(new byte[] {7, 8, 9}, readExactly(client, 3).array());
            assertEquals(-1, client.read(ByteBuffer.allocate(1)));
        });
    }

    @Test
    @Timeout(60)
    void aSenderOpenedWhileTheTransportClosesIsNeverPublished() throws IOException {
        withPair((server, client, unused) -> {
            unused.close();
            SendNow[] opened = new SendNow[1];
            SocketTransport[] transport = new SocketTransport[1];
            // The close runs after the sender's duplicate was taken and before it is published:
            // the one interleaving in which enableWriteNow finds the transport retired.
            transport[0] = new SocketTransport(server, channel -> {
                opened[0] = SendNow.open(channel);
                try {
                    transport[0].close();
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
                return opened[0];
            });
            assertFalse(transport[0].enableWriteNow(), "a transport retired under the open makes no sender");
            assertNotNull(opened[0], "the sender was opened while the channel was open");
            Path descriptor = Path.of("/proc/self/fd/" + opened[0].descriptor());
            assertFalse(Files.exists(descriptor, LinkOption.NOFOLLOW_LINKS), "the unpublished duplicate was not closed");
            ByteBuffer[] one = {ByteBuffer.allocateDirect(1).put((byte) 1).flip()};
            assertEquals(-1, transport[0].writeNow(one, 0, 1), "a retired transport sends nothing");
            assertEquals(-1, client.read(ByteBuffer.allocate(1)), "the client sees the end of the stream, no byte");
        });
    }
}
