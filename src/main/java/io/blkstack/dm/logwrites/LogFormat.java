package io.blkstack.dm.logwrites;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32C;

/**
 * The on-disk format of a write log, the one dm-log-writes documents (all numbers little-endian):
 *
 * <pre>
 * block 0 (sector 0)   super:  u64 magic 0x6a736677736872, u64 version 1, u64 nr_entries, u32 sector_size
 * then, one after the other, each entry:
 *   one sector_size block:   u64 sector, u64 nr_sectors, u64 flags, u64 data_len [, data_len bytes of mark name]
 *   for a write: nr_sectors * 512 bytes of data, padded to a whole sector_size block
 * </pre>
 *
 * <p>{@code sector} and {@code nr_sectors} count 512-byte sectors of the logged device. Flags:
 * {@link #FLUSH}, {@link #FUA}, {@link #DISCARD} (the range was discarded or zeroed; no data
 * follows), {@link #MARK} (a named mark; the name follows the header), {@link #METADATA}.
 *
 * <p><b>Checksums</b> (a blkstack extension in bytes the format leaves unused, so the kernel's
 * tools still read the log): the super block carries the marker {@link #CHECKSUM_MARKER} at byte 32
 * and at byte 40 a crc32c of its block (that field as zero); each entry carries in the last 4 bytes
 * of its header block a crc32c of the header block (that field as zero), its data (padding
 * included) and its byte offset in the log, so a flipped bit or an entry found at the wrong place
 * fails the check. A log without the marker (written by dm-log-writes or by blkstack before
 * checksums) is read without them; mark names are 4 bytes shorter than the block allows otherwise.
 *
 * <p>Crash safety: entries are only appended; the super block's {@code nr_entries} is rewritten
 * (with a preflush and FUA) after entries are durable, so a reader that trusts {@code nr_entries}
 * never sees a torn entry. A reader that scans further may find later entries that were written
 * but not yet committed; {@link LogReader} stops at {@code nr_entries}.
 */
public final class LogFormat {

    /** The super block's magic number. */
    public static final long MAGIC = 0x6a736677736872L;
    /** The format version written and accepted. */
    public static final long VERSION = 1;
    /** The sector of the super block. */
    public static final long SUPER_SECTOR = 0;
    /** Bytes of the entry header before a mark name. */
    public static final int ENTRY_HEADER_BYTES = 32;
    /** Bytes of the super block's fields, the checksum marker and the checksum included. */
    public static final int SUPER_BYTES = 44;
    /** "blkcrc32" as a little-endian u64 at byte 32 of the super block: the log carries crc32c checksums. */
    public static final long CHECKSUM_MARKER = 0x32336372636b6c62L;
    /** Where the super block keeps the marker and its checksum. */
    public static final int SUPER_MARKER_OFFSET = 32;
    public static final int SUPER_CHECKSUM_OFFSET = 40;

    /** The entry is a flush: everything before it was durable. */
    public static final long FLUSH = 1;
    /** The write was forced unit access. */
    public static final long FUA = 2;
    /** The range was discarded (or zeroed); no data follows. */
    public static final long DISCARD = 4;
    /** A named mark. */
    public static final long MARK = 8;
    /** The write was metadata. */
    public static final long METADATA = 16;

    private LogFormat() {
    }

    /** Fills {@code block} (one sector_size block, position 0) with a super block. */
    public static void encodeSuper(ByteBuffer block, long nrEntries, int sectorSize) {
        ByteBuffer b = block.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        clear(b, sectorSize);
        b.putLong(0, MAGIC).putLong(8, VERSION).putLong(16, nrEntries).putInt(24, sectorSize);
        b.putLong(SUPER_MARKER_OFFSET, CHECKSUM_MARKER);
        b.putInt(SUPER_CHECKSUM_OFFSET, superChecksum(b, sectorSize));
    }

    /** The crc32c of a super block of {@code sectorSize} bytes, its checksum field taken as zero. */
    public static int superChecksum(ByteBuffer block, int sectorSize) {
        CRC32C crc = new CRC32C();
        crc.update(block.slice(0, SUPER_CHECKSUM_OFFSET));
        crc.update(block.slice(SUPER_CHECKSUM_OFFSET + 4, sectorSize - SUPER_CHECKSUM_OFFSET - 4));
        return (int) crc.getValue();
    }

    /** Where an entry keeps its checksum: the last 4 bytes of its header block. */
    public static int entryChecksumOffset(int sectorSize) {
        return sectorSize - 4;
    }

    /**
     * Starts an entry's crc32c: its header block without the checksum field. The caller adds the
     * entry's data bytes (padding included) and ends with {@link #finishEntryChecksum}.
     */
    public static CRC32C startEntryChecksum(ByteBuffer block, int sectorSize) {
        return startEntryChecksum(new CRC32C(), block, sectorSize);
    }

    /** As {@link #startEntryChecksum(ByteBuffer, int)}, resetting and reusing {@code crc} (a writer's own). */
    public static CRC32C startEntryChecksum(CRC32C crc, ByteBuffer block, int sectorSize) {
        crc.reset();
        crc.update(block.slice(0, entryChecksumOffset(sectorSize)));
        return crc;
    }

    /** Ends an entry's crc32c with the byte offset of its header block in the log. */
    public static int finishEntryChecksum(CRC32C crc, long logOffset) {
        for (int i = 0; i < Long.BYTES; i++) {
            crc.update((int) (logOffset >>> (8 * i)) & 0xFF);
        }
        return (int) crc.getValue();
    }

    /** Fills {@code block} with an entry header and, for a mark, its name. */
    public static void encodeEntry(ByteBuffer block, int sectorSize, long sector, long nrSectors, long flags,
            byte[] mark) {
        int markLength = mark == null ? 0 : mark.length;
        if (markLength > markMaxBytes(sectorSize)) {
            throw new IllegalArgumentException("mark of " + markLength + " bytes does not fit a " + sectorSize
                    + "-byte entry block");
        }
        ByteBuffer b = block.duplicate().order(ByteOrder.LITTLE_ENDIAN);
        clear(b, sectorSize);
        b.putLong(0, sector).putLong(8, nrSectors).putLong(16, flags).putLong(24, markLength);
        if (markLength > 0) {
            b.put(ENTRY_HEADER_BYTES, mark, 0, markLength);
        }
    }

    private static void clear(ByteBuffer b, int bytes) {
        for (int i = 0; i < bytes; i += 8) {
            b.putLong(i, 0);
        }
    }

    /** The bytes of data following an entry header: the write's sectors padded to whole blocks. */
    public static long dataBytes(long nrSectors, long flags, int sectorSize) {
        if ((flags & (DISCARD | MARK)) != 0 || nrSectors == 0) {
            return 0;
        }
        long bytes = nrSectors * 512;
        return (bytes + sectorSize - 1) / sectorSize * sectorSize;
    }

    /** The longest mark name a log with {@code sectorSize} blocks holds. */
    public static int markMaxBytes(int sectorSize) {
        return sectorSize - ENTRY_HEADER_BYTES - 4;
    }

    /** A mark name as bytes, checked: non-empty, printable, no blanks, fits the block. */
    public static byte[] markBytes(String name, int sectorSize) {
        if (name == null || name.isEmpty()) {
            throw new IllegalArgumentException("mark name is empty");
        }
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            if (c <= ' ' || c > '~') {
                throw new IllegalArgumentException("mark name '" + name + "' has a blank or non-ASCII character at " + i);
            }
        }
        byte[] bytes = name.getBytes(StandardCharsets.US_ASCII);
        if (bytes.length > markMaxBytes(sectorSize)) {
            throw new IllegalArgumentException("mark name '" + name + "' is " + bytes.length + " bytes, more than "
                    + markMaxBytes(sectorSize));
        }
        return bytes;
    }

    /** The flag names of an entry, such as {@code FLUSH|FUA}, or {@code -}. */
    public static String describeFlags(long flags) {
        StringBuilder sb = new StringBuilder();
        String[] names = {"FLUSH", "FUA", "DISCARD", "MARK", "METADATA"};
        for (int i = 0; i < names.length; i++) {
            if ((flags & (1L << i)) != 0) {
                sb.append(sb.length() == 0 ? "" : "|").append(names[i]);
            }
        }
        long unknown = flags & ~31L;
        if (unknown != 0) {
            sb.append(sb.length() == 0 ? "" : "|").append("0x").append(Long.toHexString(unknown));
        }
        return sb.length() == 0 ? "-" : sb.toString();
    }
}
