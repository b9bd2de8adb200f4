package io.blkstack.nbd;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.blkstack.kernel.Kernel;
import io.blkstack.kernel.Task;
import io.blkstack.kernel.TaskKind;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The in-process transport's byte pipe keeps a blocking socket's contract, waiting only on kernel waits. */
class BytePipeTest {

    private Kernel kernel;
    private Kernel.Attachment self;

    @BeforeEach
    void setUp() {
        kernel = Kernel.builder().name("test").memory(1 << 20).build();
        self = kernel.attach("test");
    }

    @AfterEach
    void tearDown() {
        self.close();
        kernel.close();
    }

    private static ByteBuffer[] one(ByteBuffer b) {
        return new ByteBuffer[] {b};
    }

    // Proves bytes pass through a ring smaller than the message in order, with the writer waiting
    // for room while another task reads, and that end of stream comes only after the last byte.
    @Test
    void bytesArriveInOrderThroughASmallRingThenEndOfStream() throws IOException {
        BytePipe pipe = new BytePipe("t", 7);
        byte[] sent = new byte[1000];
        for (int i = 0; i < sent.length; i++) {
            sent[i] = (byte) (i * 31);
        }
        Task writer = kernel.spawn("writer", TaskKind.USER, () -> {
            ByteBuffer src = ByteBuffer.wrap(sent);
            try {
                while (src.hasRemaining()) {
                    pipe.write(one(src), 0, 1);
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            pipe.closeWrite();
        });
        ByteBuffer got = ByteBuffer.allocate(sent.length);
        ByteBuffer[] halves = {got.slice(0, 500), got.slice(500, 500)};
        long total = 0;
        while (total < sent.length) {
            long n = pipe.read(halves, 0, 2);
            assertTrue(n > 0, "read " + n + " after " + total + " bytes");
            total += n;
        }
        assertArrayEquals(sent, got.array());
        assertEquals(-1, pipe.read(one(ByteBuffer.allocate(1)), 0, 1));
        kernel.scheduler().join(writer);
    }

    // Proves the two ends of shutdown: after shutdownRead a read sees end of stream at once and
    // writes are accepted and dropped; after close both a read and a write fail.
    @Test
    void shutdownReadDropsAndCloseFails() throws IOException {
        BytePipe pipe = new BytePipe("t", 4);
        pipe.write(one(ByteBuffer.wrap(new byte[] {1, 2})), 0, 1);
        pipe.shutdownRead();
        assertEquals(-1, pipe.read(one(ByteBuffer.allocate(4)), 0, 1));
        ByteBuffer big = ByteBuffer.wrap(new byte[100]);
        assertEquals(100, pipe.write(one(big), 0, 1));
        assertEquals(0, big.remaining());

        BytePipe closed = new BytePipe("c", 4);
        closed.close();
        assertThrows(ClosedChannelException.class, () -> closed.read(one(ByteBuffer.allocate(1)), 0, 1));
        assertThrows(ClosedChannelException.class, () -> closed.write(one(ByteBuffer.allocate(1)), 0, 1));
    }
}
