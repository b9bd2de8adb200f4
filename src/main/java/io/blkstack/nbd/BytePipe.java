package io.blkstack.nbd;

import io.blkstack.kernel.SpinLock;
import io.blkstack.kernel.WaitQueue;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.util.function.BooleanSupplier;

/**
 * One direction of an in-process byte stream between kernel tasks: a bounded ring of bytes whose
 * reader waits while it is empty and whose writer waits while it is full, both on kernel
 * {@link WaitQueue}s, so the deterministic scheduler sees (and chooses) every hand-over.
 *
 * <p>The ends behave as a blocking socket's do: a read returns what is there (at least one byte),
 * or -1 once the writer {@link #closeWrite closed} and the ring is drained, or at once after
 * {@link #shutdownRead} (later bytes are dropped, as after {@code shutdown(SHUT_RD)}); a write
 * moves what fits (at least one byte) and fails once the pipe is {@link #close closed}. Heap
 * memory, allocated once; nothing from the page arena. Public for the checker's simulated NBD server
 * ({@code io.blkstack.sim.nbd}), whose connections are pairs of these.
 */
public final class BytePipe {

    private final String name;
    private final byte[] ring;
    private final SpinLock lock;
    private final WaitQueue readable;
    private final WaitQueue writable;
    // Guarded by lock.
    private int head;
    private int count;
    private boolean writeClosed;
    private boolean readShut;
    private boolean closed;
    private final BooleanSupplier canRead = this::readReady;
    private final BooleanSupplier canWrite = this::writeReady;

    public BytePipe(String name, int capacityBytes) {
        if (capacityBytes < 1) {
            throw new IllegalArgumentException("pipe " + name + ": capacity " + capacityBytes + " < 1");
        }
        this.name = name;
        this.ring = new byte[capacityBytes];
        this.lock = new SpinLock("pipe " + name);
        this.readable = new WaitQueue("pipe " + name + " readable");
        this.writable = new WaitQueue("pipe " + name + " writable");
    }

    private boolean readReady() {
        lock.lock();
        try {
            return count > 0 || writeClosed || readShut || closed;
        } finally {
            lock.unlock();
        }
    }

    private boolean writeReady() {
        lock.lock();
        try {
            return count < ring.length || readShut || closed;
        } finally {
            lock.unlock();
        }
    }

    /** Reads into {@code dsts[offset..offset+length)}; at least one byte, or -1 at end of stream. */
    public long read(ByteBuffer[] dsts, int offset, int length) throws IOException {
        readable.waitEventTimeout(canRead, this, -1, false);
        long moved = 0;
        lock.lock();
        try {
            if (closed) {
                throw new ClosedChannelException();
            }
            if (readShut || (count == 0 && writeClosed)) {
                return -1;
            }
            for (int i = offset; i < offset + length && count > 0; i++) {
                ByteBuffer dst = dsts[i];
                while (dst.hasRemaining() && count > 0) {
                    int k = Math.min(Math.min(dst.remaining(), count), ring.length - head);
                    dst.put(ring, head, k);
                    head = (head + k) % ring.length;
                    count -= k;
                    moved += k;
                }
            }
        } finally {
            lock.unlock();
        }
        writable.wakeAll();
        return moved;
    }

    /** Writes from {@code srcs[offset..offset+length)}; at least one byte (waits for room). */
    public long write(ByteBuffer[] srcs, int offset, int length) throws IOException {
        writable.waitEventTimeout(canWrite, this, -1, false);
        return writeNow(srcs, offset, length);
    }

    /**
     * Writes from {@code srcs[offset..offset+length)} what fits now, without waiting: 0 when the
     * ring is full (a socket's {@code MSG_DONTWAIT} send).
     */
    public long writeNow(ByteBuffer[] srcs, int offset, int length) throws IOException {
        long moved = 0;
        lock.lock();
        try {
            if (closed || writeClosed) {
                throw new ClosedChannelException();
            }
            for (int i = offset; i < offset + length; i++) {
                ByteBuffer src = srcs[i];
                if (readShut) {
                    moved += src.remaining(); // the reader is gone for good: bytes are dropped
                    src.position(src.limit());
                    continue;
                }
                while (src.hasRemaining() && count < ring.length) {
                    int tail = (head + count) % ring.length;
                    int k = Math.min(Math.min(src.remaining(), ring.length - count), ring.length - tail);
                    src.get(ring, tail, k);
                    count += k;
                    moved += k;
                }
            }
        } finally {
            lock.unlock();
        }
        readable.wakeAll();
        return moved;
    }

    /** The writer is done: the reader sees end of stream once the ring is drained. */
    public void closeWrite() {
        lock.lock();
        try {
            writeClosed = true;
        } finally {
            lock.unlock();
        }
        readable.wakeAll();
        writable.wakeAll();
    }

    /** The reader is done: reads return end of stream now, and later writes are dropped. */
    public void shutdownRead() {
        lock.lock();
        try {
            readShut = true;
            count = 0;
        } finally {
            lock.unlock();
        }
        readable.wakeAll();
        writable.wakeAll();
    }

    /** Closes the pipe: blocked and later reads and writes fail. */
    public void close() {
        lock.lock();
        try {
            closed = true;
        } finally {
            lock.unlock();
        }
        readable.wakeAll();
        writable.wakeAll();
    }

    @Override
    public String toString() {
        return "in-process pipe " + name + " (" + ring.length + " bytes)";
    }
}
