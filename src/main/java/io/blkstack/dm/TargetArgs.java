package io.blkstack.dm;

import io.blkstack.block.BlockDevice;
import io.blkstack.kernel.Kernel;
import java.util.List;
import java.util.function.Function;

/**
 * One table line as a target constructor sees it: its place on the mapped device, its type name,
 * its argument words, and strict parsers whose errors name the argument and why.
 *
 * <p>Arguments are numbered from 1, as in the dm documentation ({@code linear <dev> <offset>}:
 * argument 1 is the device). Every parser throws a {@link TableException} such as
 * {@code linear: argument 2 'abc' is not a sector offset}; the table adds the line number.
 */
public final class TargetArgs {

    private final Kernel kernel;
    private final String mappedDeviceName;
    private final String type;
    private final long begin;
    private final long length;
    private final List<String> words;
    private final Function<String, BlockDevice> resolver;

    /**
     * @param mappedDeviceName the device the table is for, for names of target-owned resources
     * @param resolver finds a device by the name a table uses; returns null if there is none
     */
    public TargetArgs(Kernel kernel, String mappedDeviceName, String type, long begin, long length, List<String> words,
            Function<String, BlockDevice> resolver) {
        if (begin < 0 || length <= 0) {
            throw new IllegalArgumentException("target " + type + ": begin " + begin + " length " + length);
        }
        this.kernel = kernel;
        this.mappedDeviceName = mappedDeviceName;
        this.type = type;
        this.begin = begin;
        this.length = length;
        this.words = List.copyOf(words);
        this.resolver = resolver;
    }

    public Kernel kernel() {
        return kernel;
    }

    /** The name of the mapped device the table is loaded for. */
    public String mappedDeviceName() {
        return mappedDeviceName;
    }

    /** The target type name, as written in the table. */
    public String type() {
        return type;
    }

    /** The first sector of the target on the mapped device. */
    public long begin() {
        return begin;
    }

    /** The target's length in sectors. */
    public long length() {
        return length;
    }

    /** How many argument words follow the type name. */
    public int count() {
        return words.size();
    }

    /** Argument {@code index} (1-based) as written. */
    public String word(int index) {
        if (index < 1 || index > words.size()) {
            throw new IllegalArgumentException(type + ": argument " + index + " of " + words.size());
        }
        return words.get(index - 1);
    }

    /** Every argument word, in order. */
    public List<String> words() {
        return words;
    }

    /** An error about argument {@code index}, quoting it. */
    public TableException error(int index, String reason) {
        return new TableException(0, type, index, word(index), reason);
    }

    /** An error about the target as a whole (argument count, length). */
    public TableException error(String reason) {
        return new TableException(0, type, 0, null, reason);
    }

    /** Throws unless there are exactly {@code n} arguments; {@code usage} lists them. */
    public void requireCount(int n, String usage) throws TableException {
        if (words.size() != n) {
            throw error(words.size() + " argument(s), expected " + n + ": " + usage);
        }
    }

    /** Throws unless there are at least {@code n} arguments. */
    public void requireCountAtLeast(int n, String usage) throws TableException {
        if (words.size() < n) {
            throw error(words.size() + " argument(s), expected at least " + n + ": " + usage);
        }
    }

    /** Argument {@code index} as a sector number (decimal, 0 or more). */
    public long sector(int index) throws TableException {
        return unsigned(index, "is not a sector offset");
    }

    /** Argument {@code index} as a decimal number of at least 0; {@code notWhat} says what it must be. */
    public long unsigned(int index, String notWhat) throws TableException {
        String w = word(index);
        if (w.isEmpty() || w.length() > 18) {
            throw error(index, notWhat);
        }
        for (int i = 0; i < w.length(); i++) {
            if (w.charAt(i) < '0' || w.charAt(i) > '9') {
                throw error(index, notWhat);
            }
        }
        return Long.parseLong(w);
    }

    /** Argument {@code index} as an int in {@code min..max}; {@code what} names the quantity. */
    public int intInRange(int index, int min, int max, String what) throws TableException {
        long v = unsigned(index, "is not a number (" + what + ")");
        if (v < min || v > max) {
            throw error(index, what + " must be in " + min + ".." + max);
        }
        return (int) v;
    }

    /** Argument {@code index} as a device name, resolved through the caller's resolver. */
    public BlockDevice device(int index) throws TableException {
        String name = word(index);
        BlockDevice dev = resolver == null ? null : resolver.apply(name);
        if (dev == null) {
            throw error(index, "names no known device");
        }
        return dev;
    }

    /**
     * Throws unless {@code sectors} sectors from {@code offset} lie inside {@code dev} (the kernel's
     * {@code device_area_is_invalid}); {@code index} is the offset's argument.
     */
    public void requireArea(int index, BlockDevice dev, long offset, long sectors) throws TableException {
        if (offset + sectors > dev.capacitySectors() || offset + sectors < offset) {
            throw error(index, "with " + sectors + " sectors goes past the end of device " + dev.name() + " ("
                    + dev.capacitySectors() + " sectors)");
        }
        int lbs = dev.limits().logicalBlockSectors();
        if (offset % lbs != 0) {
            throw error(index, "is not aligned to the logical block size of device " + dev.name() + " ("
                    + dev.limits().logicalBlockSize() + " bytes)");
        }
    }
}
