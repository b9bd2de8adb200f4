package io.blkstack.logwrites;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * Reads a write log ({@link LogFormat}) offline: checks the super block, then walks the committed
 * entries ({@code nr_entries} of the super block) in order. Every malformed field is reported with
 * its entry number and byte offset.
 */
public final class LogReader {

    /** Largest block size accepted in a super block. */
    public static final int SECTOR_SIZE_MAX = 65536;

    private final LogSource source;
    private final long nrEntries;
    private final int sectorSize;

    /** Opens the log and checks its super block. */
    public LogReader(LogSource source) throws IOException {
        this.source = source;
        if (source.size() < 512) {
            throw new IOException("log of " + source.size() + " bytes has no super block");
        }
        byte[] sb = new byte[LogFormat.SUPER_BYTES];
        source.read(LogFormat.SUPER_SECTOR * 512, sb, 0, sb.length);
        ByteBuffer b = ByteBuffer.wrap(sb).order(ByteOrder.LITTLE_ENDIAN);
        long magic = b.getLong(0);
        if (magic != LogFormat.MAGIC) {
            throw new IOException("not a write log: magic 0x" + Long.toHexString(magic) + ", expected 0x"
                    + Long.toHexString(LogFormat.MAGIC));
        }
        long version = b.getLong(8);
        if (version != LogFormat.VERSION) {
            throw new IOException("write log version " + version + ", this reader knows " + LogFormat.VERSION);
        }
        this.nrEntries = b.getLong(16);
        this.sectorSize = b.getInt(24);
        if (sectorSize < 512 || sectorSize > SECTOR_SIZE_MAX || Integer.bitCount(sectorSize) != 1) {
            throw new IOException("write log sector size " + sectorSize + " is not a power of two in 512.."
                    + SECTOR_SIZE_MAX);
        }
        if (nrEntries < 0) {
            throw new IOException("write log claims " + nrEntries + " entries");
        }
    }

    /** The committed entries the super block counts. */
    public long entryCount() {
        return nrEntries;
    }

    /** The log's block size. */
    public int sectorSize() {
        return sectorSize;
    }

    /** Reads every committed entry header, in log order. */
    public List<LogEntry> entries() throws IOException {
        List<LogEntry> out = new ArrayList<>();
        long offset = sectorSize; // the first entry follows the super block
        long size = source.size();
        byte[] block = new byte[sectorSize];
        ByteBuffer b = ByteBuffer.wrap(block).order(ByteOrder.LITTLE_ENDIAN);
        for (long i = 0; i < nrEntries; i++) {
            if (offset + sectorSize > size) {
                throw new IOException("entry " + i + " at byte " + offset + " lies past the log's end " + size);
            }
            source.read(offset, block, 0, sectorSize);
            long sector = b.getLong(0);
            long nrSectors = b.getLong(8);
            long flags = b.getLong(16);
            long dataLen = b.getLong(24);
            if (nrSectors < 0 || sector < 0 || sector + nrSectors < sector) {
                throw new IOException("entry " + i + " at byte " + offset + ": bad range " + sector + "+" + nrSectors);
            }
            String mark = null;
            if ((flags & LogFormat.MARK) != 0) {
                if (dataLen <= 0 || dataLen > LogFormat.markMaxBytes(sectorSize)) {
                    throw new IOException("entry " + i + " at byte " + offset + ": mark of " + dataLen + " bytes");
                }
                mark = new String(block, LogFormat.ENTRY_HEADER_BYTES, (int) dataLen, StandardCharsets.US_ASCII);
            }
            out.add(new LogEntry(i, offset, sector, nrSectors, flags, mark));
            long data = LogFormat.dataBytes(nrSectors, flags, sectorSize);
            if (offset + sectorSize + data > size) {
                throw new IOException("entry " + i + " at byte " + offset + ": " + data + " bytes of data run past the"
                        + " log's end " + size);
            }
            offset += sectorSize + data;
        }
        return out;
    }

    /** Reads {@code length} bytes of an entry's data, from {@code within} bytes into it. */
    public void readData(LogEntry entry, long within, byte[] dst, int dstOffset, int length) throws IOException {
        long bytes = entry.nrSectors() * 512;
        if (within < 0 || within + length > bytes || !entry.hasData(sectorSize)) {
            throw new IllegalArgumentException("entry " + entry.index() + ": " + length + " bytes at " + within
                    + " of " + bytes);
        }
        source.read(entry.logOffset() + sectorSize + within, dst, dstOffset, length);
    }
}
