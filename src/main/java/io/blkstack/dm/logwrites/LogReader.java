package io.blkstack.dm.logwrites;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32C;

/**
 * Reads a write log ({@link LogFormat}) offline: checks the super block, then walks the committed
 * entries ({@code nr_entries} of the super block) in order. Every malformed field, and in a log
 * with checksums every entry whose crc32c does not match, is reported with its entry number and
 * byte offset.
 */
public final class LogReader {

    /** Largest block size accepted in a super block. */
    public static final int SECTOR_SIZE_MAX = 65536;

    private final LogSource source;
    private final long nrEntries;
    private final int sectorSize;
    private final boolean checksums;

    /** Opens the log and checks its super block. */
    public LogReader(LogSource source) throws IOException {
        this.source = source;
        if (source.size() < 512) {
            throw new IOException("log of " + source.size() + " bytes has no super block");
        }
        byte[] sb = new byte[512];
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
        if (source.size() < sectorSize) {
            throw new IOException("log of " + source.size() + " bytes has no whole super block of " + sectorSize);
        }
        byte[] block = new byte[sectorSize];
        source.read(LogFormat.SUPER_SECTOR * 512, block, 0, sectorSize);
        ByteBuffer whole = ByteBuffer.wrap(block).order(ByteOrder.LITTLE_ENDIAN);
        int stored = whole.getInt(LogFormat.SUPER_CHECKSUM_OFFSET);
        this.checksums = whole.getLong(LogFormat.SUPER_MARKER_OFFSET) == LogFormat.CHECKSUM_MARKER;
        if (!checksums && stored != 0) {
            // A damaged marker must not switch the checks off: with the right marker, does the checksum fit?
            whole.putLong(LogFormat.SUPER_MARKER_OFFSET, LogFormat.CHECKSUM_MARKER);
            if (LogFormat.superChecksum(whole, sectorSize) == stored) {
                throw new IOException("super block: checksum marker damaged");
            }
        }
        if (checksums) {
            int computed = LogFormat.superChecksum(whole, sectorSize);
            if (stored != computed) {
                throw new IOException("super block: checksum mismatch (stored 0x" + Integer.toHexString(stored)
                        + ", computed 0x" + Integer.toHexString(computed) + ")");
            }
        }
        if (nrEntries < 0) {
            throw new IOException("write log claims " + nrEntries + " entries");
        }
    }

    /**
     * Whether the log carries crc32c checksums (written by blkstack since format checksums); a log
     * of dm-log-writes or an older blkstack has none and is read unchecked.
     */
    public boolean hasChecksums() {
        return checksums;
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
            long data = LogFormat.dataBytes(nrSectors, flags, sectorSize);
            if (offset + sectorSize + data > size) {
                throw new IOException("entry " + i + " at byte " + offset + ": " + data + " bytes of data run past the"
                        + " log's end " + size);
            }
            if (checksums) {
                verifyEntry(i, offset, b, data);
            }
            out.add(new LogEntry(i, offset, sector, nrSectors, flags, mark));
            offset += sectorSize + data;
        }
        return out;
    }

    /** Checks entry {@code index}'s crc32c over its header block (in {@code header}), its data and its offset. */
    private void verifyEntry(long index, long offset, ByteBuffer header, long dataBytes) throws IOException {
        CRC32C crc = LogFormat.startEntryChecksum(header, sectorSize);
        byte[] chunk = new byte[(int) Math.min(dataBytes, 1 << 16)];
        for (long done = 0; done < dataBytes; ) {
            int n = (int) Math.min(chunk.length, dataBytes - done);
            source.read(offset + sectorSize + done, chunk, 0, n);
            crc.update(chunk, 0, n);
            done += n;
        }
        int computed = LogFormat.finishEntryChecksum(crc, offset);
        int stored = header.getInt(LogFormat.entryChecksumOffset(sectorSize));
        if (stored != computed) {
            throw new IOException("entry " + index + " at byte " + offset + ": checksum mismatch (stored 0x"
                    + Integer.toHexString(stored) + ", computed 0x" + Integer.toHexString(computed) + ")");
        }
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
