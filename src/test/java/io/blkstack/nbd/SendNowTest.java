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

    /** A connected loopback pair: [0] the server's accepted end, [1] the client's. */
    private static SocketChannel[] pair(ServerSocketChannel listener) throws IOException {
        SocketChannel client = SocketChannel.open(listener.getLocalAddress());
        return new SocketChannel[] {listener.accept(), client};
    }

    private static ServerSocketChannel listener() throws IOException {
        return ServerSocketChannel.open().bind(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0));
    }

    @Test
    void sendsWhatTheSocketTakesAndStopsWhenItIsFull() throws IOException {
        assumeTrue(NativeCalls.onLinux());
        try (ServerSocketChannel l = listener()) {
            SocketChannel[] ends = pair(l);
            try (SocketChannel server = ends[0]; SocketChannel client = ends[1]) {
                SendNow sender = SendNow.open(server);
                assertNotNull(sender, "the test JVM exports sun.nio.ch and allows native access, as the jar does");
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
                ByteBuffer in = ByteBuffer.allocate((int) total);
                while (in.hasRemaining()) {
                    client.read(in);
                }
                in.flip();
                byte expect = 0;
                for (int i = 0; i < total; i++) {
                    assertEquals(expect++, in.get(), "byte " + i);
                }
                sender.close();
                sender.close(); // idempotent
                assertEquals(-1, sender.send(new ByteBuffer[] {ByteBuffer.allocateDirect(1)}, 0, 1), "closed: refused");
            }
        }
    }

    @Test
    void refusesHeapBuffersWithoutTouchingThem() throws IOException {
        assumeTrue(NativeCalls.onLinux());
        try (ServerSocketChannel l = listener()) {
            SocketChannel[] ends = pair(l);
            try (SocketChannel server = ends[0]; SocketChannel client = ends[1]) {
                SendNow sender = SendNow.open(server);
                assertNotNull(sender);
                ByteBuffer direct = ByteBuffer.allocateDirect(4).put(new byte[] {1, 2, 3, 4}).flip();
                ByteBuffer heap = ByteBuffer.wrap(new byte[] {5, 6});
                assertEquals(-1, sender.send(new ByteBuffer[] {direct, heap}, 0, 2));
                assertEquals(4, direct.remaining());
                assertEquals(2, heap.remaining());
                assertEquals(4, sender.send(new ByteBuffer[] {direct}, 0, 1));
                ByteBuffer in = ByteBuffer.allocate(4);
                while (in.hasRemaining()) {
                    client.read(in);
                }
                assertArrayEquals(new byte[] {1, 2, 3, 4}, in.array());
                sender.close();
            }
        }
    }

    /**
     * Proves a close during a send keeps the duplicate open until the send ends, and closes it
     * then (the count in {@link SendNow}): otherwise the number could be reused by another client's
     * socket while the send still uses it.
     */
    @Test
    void aCloseDuringASendClosesTheDuplicateWhenTheSendEnds() throws IOException {
        assumeTrue(NativeCalls.onLinux());
        try (ServerSocketChannel l = listener()) {
            SocketChannel[] ends = pair(l);
            try (SocketChannel server = ends[0]; SocketChannel client = ends[1]) {
                SendNow sender = SendNow.open(server);
                assertNotNull(sender);
                Path descriptor = Path.of("/proc/self/fd/" + sender.descriptor());
                assertTrue(Files.exists(descriptor, LinkOption.NOFOLLOW_LINKS));
                assertTrue(sender.enterForTest());
                sender.close();
                assertTrue(Files.exists(descriptor, LinkOption.NOFOLLOW_LINKS), "closed under a send");
                assertFalse(sender.enterForTest(), "a send after the close began");
                sender.exitForTest();
                assertFalse(Files.exists(descriptor, LinkOption.NOFOLLOW_LINKS), "not closed when the send ended");
            }
        }
    }

    @Test
    @Timeout(60)
    void theTransportRetiresItsSenderBeforeTheChannelCloses() throws IOException {
        assumeTrue(NativeCalls.onLinux());
        try (ServerSocketChannel l = listener()) {
            SocketChannel[] ends = pair(l);
            try (SocketChannel client = ends[1]) {
                SocketTransport transport = new SocketTransport(ends[0]);
                assertTrue(transport.enableWriteNow());
                ByteBuffer[] one = {ByteBuffer.allocateDirect(3).put(new byte[] {7, 8, 9}).flip()};
                assertEquals(3, transport.writeNow(one, 0, 1));
                transport.close();
                one[0].clear();
                assertEquals(-1, transport.writeNow(one, 0, 1), "after close nothing is sent on any descriptor");
                assertTrue(!transport.enableWriteNow(), "a closed transport makes no sender");
                // The client sees the three bytes, then the end of the stream: the duplicate closed too.
                ByteBuffer in = ByteBuffer.allocate(8);
                int n;
                while ((n = client.read(in)) >= 0) {
                    assertTrue(n >= 0);
                }
                assertEquals(3, in.position());
            }
        }
    }
}
