package io.blkstack.dm.logwrites;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;

/** Random-access bytes of a write log, for the offline reader (a file, or a copy in memory). */
public interface LogSource {

    /** The log's size in bytes. */
    long size() throws IOException;

    /** Reads exactly {@code length} bytes at {@code offset} into {@code dst} at {@code dstOffset}. */
    void read(long offset, byte[] dst, int dstOffset, int length) throws IOException;

    /** A log held in a byte array. */
    static LogSource of(byte[] bytes) {
        return new LogSource() {
            @Override
            public long size() {
                return bytes.length;
            }

            @Override
            public void read(long offset, byte[] dst, int dstOffset, int length) throws IOException {
                if (offset < 0 || offset + length > bytes.length) {
                    throw new EOFException("log read of " + length + " bytes at " + offset + " past its end "
                            + bytes.length);
                }
                System.arraycopy(bytes, (int) offset, dst, dstOffset, length);
            }
        };
    }

    /** A log in a file opened for reading. */
    static LogSource of(FileChannel channel) {
        return new LogSource() {
            @Override
            public long size() throws IOException {
                return channel.size();
            }

            @Override
            public void read(long offset, byte[] dst, int dstOffset, int length) throws IOException {
                ByteBuffer buf = ByteBuffer.wrap(dst, dstOffset, length);
                long pos = offset;
                while (buf.hasRemaining()) {
                    int n = channel.read(buf, pos);
                    if (n < 0) {
                        throw new EOFException("log file ends at " + pos + ", wanted " + length + " bytes at " + offset);
                    }
                    pos += n;
                }
            }
        };
    }
}
