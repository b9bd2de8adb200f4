package io.blkstack.kernel;

/**
 * The reserve sizes a kernel's components take where Linux has a tunable for them, chosen when
 * the kernel is built (YAML {@code reserves:}), so that a configuration can be checked and served
 * with the reserves it names: "is this stack safe with a reserve of 1?".
 *
 * @param dmClones clone bios in the reserve of each mapped device's bio set (the kernel's
 *     {@code dm_mod.reserved_bio_based_ios}, 16)
 * @param targetBios bios in the reserve of each target's own bio set (mirror, crypt: their
 *     per-target mempools, 16)
 * @param bufioBuffers buffers in the reserve of each buffer cache (thin pool metadata; dm-bufio's
 *     reserved buffers, 4)
 */
public record Reserves(int dmClones, int targetBios, int bufioBuffers) {

    /** The kernel's defaults. */
    public static final Reserves DEFAULTS = new Reserves(16, 16, 4);
    /** The largest reserve accepted for any of them: every element is allocated up front. */
    public static final int MAX = 4096;

    /** Every reserve at least 1 (a reserve of 0 guarantees nothing) and at most {@link #MAX}. */
    public Reserves {
        check("dm-clones", dmClones);
        check("target-bios", targetBios);
        check("bufio-buffers", bufioBuffers);
    }

    private static void check(String key, int value) {
        if (value < 1 || value > MAX) {
            throw new IllegalArgumentException("reserve " + key + " " + value + " is not in 1.." + MAX);
        }
    }
}
