/**
 * Block devices and the submit loop: {@code BlockDevice}, {@code QueueLimits}, {@code Submit}
 * (depth-first, per-task pending lists), splitting to limits, and the bottom devices (file,
 * memory, null) that complete bios from their own tasks.
 *
 * <p>{@code block} and {@code bio} depend on each other: they are one layer in two packages; the
 * reason is written in {@link io.blkstack.bio}'s package documentation.
 */
package io.blkstack.block;
