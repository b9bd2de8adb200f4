/**
 * Memory of one kernel: the page arena and {@code PageAllocator} with watermarks and reclaim,
 * GFP flags, shrinkers, slabs and {@code Mempool} (the kernel's reserve algorithm).
 *
 * <p>{@code mem} and {@code kernel} depend on each other: the kernel owns its arena and the arena
 * blocks only through kernel primitives; the reason is written in {@link io.blkstack.kernel}'s
 * package documentation.
 */
package io.blkstack.mem;
