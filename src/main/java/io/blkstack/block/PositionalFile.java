package io.blkstack.block;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;

/**
 * The file behind a {@link FileDevice}, accessed only by position: whole-buffer reads and writes
 * that loop over short transfers, reads past the end of the file that return zeros (a sparse image
 * shorter than its device reads as zeros, as a hole does), and zeroing that leaves holes alone.
 *
 * <p>Positional I/O keeps no shared file position, so the device's I/O tasks use one channel
 * concurrently without a lock.
 */
final class PositionalFile {

    private final FileChannel channel;

    PositionalFile(FileChannel channel) {
        this.channel = channel;
    }

    /** The channel, for closing and forcing. */
    FileChannel channel() {
        return channel;
    }

    /** Fills {@code dst} from {@code position}; bytes past the end of the file read as zeros. */
    void readFully(ByteBuffer dst, long position) throws IOException {
        long at = position;
        while (dst.hasRemaining()) {
            int n = channel.read(dst, at);
            if (n < 0) {
                zeroRemaining(dst);
                return;
            }
            if (n == 0) {
                // A zero-length read that is not EOF: the file ends inside an aligned block (direct I/O).
                if (at >= channel.size()) {
                    zeroRemaining(dst);
                    return;
                }
                throw new IOException("read of " + dst.remaining() + " bytes at " + at + " made no progress");
            }
            at += n;
        }
    }

    /** Writes all of {@code src} at {@code position}, extending the file if needed. */
    void writeFully(ByteBuffer src, long position) throws IOException {
        long at = position;
        while (src.hasRemaining()) {
            int n = channel.write(src, at);
            if (n <= 0) {
                throw new IOException("write of " + src.remaining() + " bytes at " + at + " made no progress");
            }
            at += n;
        }
    }

    /**
     * Fills {@code dst[0..count)}, contiguous in the file from {@code position}, with as few
     * scattering reads as the kernel allows. {@code cursor} is a channel on the same file owned by
     * the calling I/O task alone (its file position is moved); bytes past the end read as zeros.
     */
    void readFully(FileChannel cursor, ByteBuffer[] dst, int count, long position) throws IOException {
        cursor.position(position);
        long at = position;
        int idx = 0;
        while (idx < count) {
            if (!dst[idx].hasRemaining()) {
                idx++;
                continue;
            }
            long n = cursor.read(dst, idx, count - idx);
            if (n <= 0) {
                // End of file (or no progress): finish buffer by buffer, zeros past the end.
                for (; idx < count; idx++) {
                    int left = dst[idx].remaining();
                    readFully(dst[idx], at);
                    at += left;
                }
                return;
            }
            at += n;
        }
    }

    /**
     * Writes all of {@code src[0..count)} contiguously at {@code position} with gathering writes
     * on {@code cursor}, a channel on the same file owned by the calling I/O task alone.
     */
    void writeFully(FileChannel cursor, ByteBuffer[] src, int count, long position) throws IOException {
        cursor.position(position);
        int idx = 0;
        while (idx < count) {
            if (!src[idx].hasRemaining()) {
                idx++;
                continue;
            }
            long n = cursor.write(src, idx, count - idx);
            if (n <= 0) {
                throw new IOException("gathering write at " + cursor.position() + " made no progress");
            }
        }
    }

    /**
     * Makes {@code length} bytes at {@code position} read as zeros without allocating holes: each
     * chunk is read into {@code scratch} first and written (from {@code zeros}) only if it holds
     * data. A discard or write-zeroes over a fresh sparse image (mkfs, nbdcopy) so stays sparse.
     *
     * @param scratch a buffer of at least {@code chunk} bytes, reused for every chunk
     * @param zeros a buffer of at least {@code chunk} bytes of zeros, never written
     * @param chunk the unit of checking and writing (the alignment unit under direct I/O)
     * @return how many bytes were written
     */
    long zeroRange(long position, long length, ByteBuffer scratch, ByteBuffer zeros, int chunk) throws IOException {
        if (scratch.capacity() < chunk || zeros.capacity() < chunk) {
            throw new IllegalArgumentException("zero range: buffers of " + scratch.capacity() + " and "
                    + zeros.capacity() + " bytes are smaller than the chunk of " + chunk);
        }
        long written = 0;
        long end = position + length;
        long fileSize = channel.size();
        for (long at = position; at < end && at < fileSize; ) {
            int n = (int) Math.min(chunk, end - at);
            scratch.clear().limit(n);
            zeros.clear().limit(n);
            readFully(scratch, at);
            scratch.flip();
            if (scratch.mismatch(zeros) != -1) {
                zeros.clear().limit(n);
                writeFully(zeros, at);
                written += n;
            }
            at += n;
        }
        return written;
    }

    /** Pushes written data to stable storage ({@code fdatasync}). */
    void force() throws IOException {
        channel.force(false);
    }

    /** The file's current length in bytes. */
    long size() throws IOException {
        return channel.size();
    }

    private static void zeroRemaining(ByteBuffer dst) {
        while (dst.hasRemaining()) {
            dst.put((byte) 0);
        }
    }
}
