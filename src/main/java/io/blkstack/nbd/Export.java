package io.blkstack.nbd;

import io.blkstack.bio.Bio;
import io.blkstack.block.BlockDevice;
import java.nio.charset.StandardCharsets;

/**
 * One named NBD export: a block device with its access mode, a description for humans, and the
 * size constraints advertised in {@code NBD_INFO_BLOCK_SIZE}.
 *
 * <p>The transmission flags ({@link #transmissionFlags}) tell the truth about the export: a
 * read-only export advertises no write-class command; fast zero is advertised wherever write
 * zeroes is, and a request with {@code NBD_CMD_FLAG_FAST_ZERO} fails at once with
 * {@code NBD_ENOTSUP} unless {@link #fastZero} (the spec allows that reading of the flag).
 * {@code CAN_MULTI_CONN} is set because every connection submits to the same device with no
 * per-connection cache, so a flush is device-wide.
 *
 * @param name the export name clients ask for (at most 4096 bytes of UTF-8)
 * @param device the device served
 * @param readOnly whether writes, trims and zeroes fail with {@code NBD_EPERM}
 * @param description a human-readable description, or empty
 * @param minimumBlockSize smallest addressable unit: a power of two up to 64 KiB; requests not
 *     aligned to it fail with {@code NBD_EINVAL}. Below the device's logical block size (the
 *     default is 1) the server serves the unaligned ends by read-modify-write
 * @param preferredBlockSize a power of two, at least {@code max(minimumBlockSize, 512)}
 * @param maximumPayload largest READ/WRITE payload, at least the preferred size, at most 32 MiB
 * @param fastZero whether write zeroes is faster than a write (true for devices that track
 *     allocation: they drop the range instead of writing it)
 */
public record Export(String name, BlockDevice device, boolean readOnly, String description, int minimumBlockSize,
        int preferredBlockSize, int maximumPayload, boolean fastZero) {

    /** The preferred block size unless told otherwise. */
    public static final int DEFAULT_PREFERRED_BLOCK_SIZE = 4096;

    /** Checks every constraint of the size-constraints section of the protocol. */
    public Export {
        if (name == null || name.getBytes(StandardCharsets.UTF_8).length > NbdProtocol.STRING_BYTES_MAX) {
            throw new IllegalArgumentException("export name " + name + " is missing or longer than "
                    + NbdProtocol.STRING_BYTES_MAX + " bytes");
        }
        if (device == null) {
            throw new IllegalArgumentException("export " + name + " has no device");
        }
        description = description == null ? "" : description;
        if (description.getBytes(StandardCharsets.UTF_8).length > NbdProtocol.STRING_BYTES_MAX) {
            throw new IllegalArgumentException("export " + name + ": description longer than "
                    + NbdProtocol.STRING_BYTES_MAX + " bytes");
        }
        if (!powerOfTwo(minimumBlockSize) || minimumBlockSize > 65536) {
            throw new IllegalArgumentException("export " + name + ": minimum block size " + minimumBlockSize
                    + " must be a power of two in 1..65536");
        }
        if (!powerOfTwo(preferredBlockSize) || preferredBlockSize < Math.max(minimumBlockSize, Bio.SECTOR_SIZE)) {
            throw new IllegalArgumentException("export " + name + ": preferred block size " + preferredBlockSize
                    + " must be a power of two >= " + Math.max(minimumBlockSize, Bio.SECTOR_SIZE));
        }
        if (maximumPayload < preferredBlockSize || maximumPayload > NbdProtocol.DEFAULT_MAX_PAYLOAD
                || maximumPayload % minimumBlockSize != 0) {
            throw new IllegalArgumentException("export " + name + ": maximum payload " + maximumPayload
                    + " must be a multiple of " + minimumBlockSize + " in " + preferredBlockSize + ".."
                    + NbdProtocol.DEFAULT_MAX_PAYLOAD);
        }
        if (device.capacityBytes() % minimumBlockSize != 0) {
            throw new IllegalArgumentException("export " + name + ": size " + device.capacityBytes()
                    + " is not a multiple of the minimum block size " + minimumBlockSize);
        }
    }

    /**
     * An export with the default constraints: minimum 1 (any byte range; unaligned ends by
     * read-modify-write), preferred 4096 or the device's logical block size, maximum 32 MiB;
     * fast zero where the device tracks allocation.
     */
    public Export(String name, BlockDevice device, boolean readOnly, String description) {
        this(name, device, readOnly, description, 1,
                Math.max(DEFAULT_PREFERRED_BLOCK_SIZE, device.limits().logicalBlockSize()),
                NbdProtocol.DEFAULT_MAX_PAYLOAD, device.knowsAllocation());
    }

    /** The export size in bytes. */
    public long sizeBytes() {
        return device.capacityBytes();
    }

    /** The 16-bit transmission flags sent in {@code NBD_INFO_EXPORT} and after {@code EXPORT_NAME}. */
    public int transmissionFlags() {
        int flags = NbdProtocol.FLAG_HAS_FLAGS | NbdProtocol.FLAG_SEND_FLUSH | NbdProtocol.FLAG_SEND_FUA
                | NbdProtocol.FLAG_SEND_CACHE | NbdProtocol.FLAG_CAN_MULTI_CONN;
        if (readOnly) {
            return flags | NbdProtocol.FLAG_READ_ONLY;
        }
        return flags | NbdProtocol.FLAG_SEND_TRIM | NbdProtocol.FLAG_SEND_WRITE_ZEROES
                | NbdProtocol.FLAG_SEND_FAST_ZERO;
    }

    /** A copy with another maximum payload (the server lowers it to fit its memory budget). */
    public Export withMaximumPayload(int bytes) {
        return new Export(name, device, readOnly, description, minimumBlockSize, preferredBlockSize, bytes, fastZero);
    }

    private static boolean powerOfTwo(int v) {
        return v > 0 && (v & (v - 1)) == 0;
    }
}
