package io.blkstack.dm.logwrites;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.Arrays;

/** Where a replay writes the rebuilt device (a file, or a byte array in tests). */
public interface LogSink {

    /** Writes {@code length} bytes of {@code src} from {@code srcOffset} at byte {@code offset}. */
    void write(long offset, byte[] src, int srcOffset, int length) throws IOException;

    /** Makes {@code length} bytes at {@code offset} read as zeroes (a discard or write-zeroes). */
    default void zero(long offset, long length) throws IOException {
        byte[] zeros = new byte[(int) Math.min(length, 1 << 20)];
        for (long done = 0; done < length; ) {
            int n = (int) Math.min(zeros.length, length - done);
            write(offset + done, zeros, 0, n);
            done += n;
        }
    }

    /** A device held in a byte array; writes past its end are an error. */
    static LogSink of(byte[] device) {
        return new LogSink() {
            @Override
            public void write(long offset, byte[] src, int srcOffset, int length) throws IOException {
                if (offset < 0 || offset + length > device.length) {
                    throw new IOException("replay write of " + length + " bytes at " + offset + " past the device end "
                            + device.length);
                }
                System.arraycopy(src, srcOffset, device, (int) offset, length);
            }

            @Override
            public void zero(long offset, long length) throws IOException {
                if (offset < 0 || offset + length > device.length) {
                    throw new IOException("replay zero of " + length + " bytes at " + offset + " past the device end "
                            + device.length);
                }
                Arrays.fill(device, (int) offset, (int) (offset + length), (byte) 0);
            }
        };
    }

    /** A device file opened for writing; it grows as needed. */
    static LogSink of(FileChannel channel) {
        return (offset, src, srcOffset, length) -> {
            ByteBuffer buf = ByteBuffer.wrap(src, srcOffset, length);
            long pos = offset;
            while (buf.hasRemaining()) {
                pos += channel.write(buf, pos);
            }
        };
    }
}
