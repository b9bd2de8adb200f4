package io.blkstack.dm.thin.metadata;

import io.blkstack.bufio.Buffer;
import java.util.zip.CRC32C;

/**
 * The crc32c of a thin metadata block (as dm-thin's metadata uses): over the whole block except the
 * 4-byte checksum field, then over the block's own number, so a block written to the wrong place
 * fails as surely as a block with a flipped bit. A never-written (zeroed) block fails too.
 */
final class BlockChecksum {

    private BlockChecksum() {
    }

    /** The checksum of {@code b}, which lives at {@code block}, with its field at {@code fieldOffset}. */
    static int compute(Buffer b, int fieldOffset, long block) {
        if (fieldOffset < 0 || fieldOffset + Integer.BYTES > b.size()) {
            throw new IllegalArgumentException("checksum field at " + fieldOffset + " outside a block of " + b.size());
        }
        CRC32C crc = new CRC32C();
        b.updateChecksum(crc, 0, fieldOffset);
        int after = fieldOffset + Integer.BYTES;
        b.updateChecksum(crc, after, b.size() - after);
        for (int i = 0; i < Long.BYTES; i++) {
            crc.update((int) (block >>> (8 * i)) & 0xFF);
        }
        return (int) crc.getValue();
    }

    /** Stores the checksum of a block whose contents are final (just before it is marked dirty). */
    static void seal(Buffer b, int fieldOffset, long block) {
        b.putInt(fieldOffset, compute(b, fieldOffset, block));
    }

    /**
     * Checks the stored checksum.
     *
     * @throws CorruptMetadataException naming {@code what} (e.g. "metadata block 7") and both values
     */
    static void verify(Buffer b, int fieldOffset, long block, String what) {
        int stored = b.getInt(fieldOffset);
        int computed = compute(b, fieldOffset, block);
        if (stored != computed) {
            throw new CorruptMetadataException(what + ": checksum mismatch (stored 0x" + Integer.toHexString(stored)
                    + ", computed 0x" + Integer.toHexString(computed) + ")");
        }
    }
}
