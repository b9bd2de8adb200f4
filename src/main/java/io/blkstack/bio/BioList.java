package io.blkstack.bio;

import java.util.ArrayList;
import java.util.List;

/**
 * A FIFO list of bios linked through {@link Bio#next} (the kernel's {@code bio_list}). Adding and
 * popping allocate nothing, so the submit loop's pending lists and a bio set's rescue list cost no
 * memory beyond the bios themselves; their length is bounded by the pools the bios came from.
 *
 * <p>Not thread-safe: a task's pending lists are touched only by that task, and a rescue list
 * only under its bio set's lock.
 */
public final class BioList {

    private Bio head;
    private Bio tail;
    private int size;

    /** Appends a bio that is on no other list. */
    public void add(Bio bio) {
        if (bio.next != null || tail == bio) {
            throw new IllegalStateException("bio " + bio + " is already on a list");
        }
        if (tail == null) {
            head = bio;
        } else {
            tail.next = bio;
        }
        tail = bio;
        size++;
    }

    /** Removes and returns the first bio, or null if the list is empty. */
    public Bio pop() {
        Bio bio = head;
        if (bio == null) {
            return null;
        }
        head = bio.next;
        if (head == null) {
            tail = null;
        }
        bio.next = null;
        size--;
        return bio;
    }

    /** Moves every bio of {@code other} to the end of this list, leaving {@code other} empty. */
    public void merge(BioList other) {
        if (other == this) {
            throw new IllegalArgumentException("bio list merged into itself");
        }
        if (other.head == null) {
            return;
        }
        if (tail == null) {
            head = other.head;
        } else {
            tail.next = other.head;
        }
        tail = other.tail;
        size += other.size;
        other.head = null;
        other.tail = null;
        other.size = 0;
    }

    /** Unlinks every bio; returns how many there were. */
    public int clear() {
        int n = 0;
        while (pop() != null) {
            n++;
        }
        return n;
    }

    /** The first bio without removing it. */
    public Bio peek() {
        return head;
    }

    public boolean isEmpty() {
        return head == null;
    }

    public int size() {
        return size;
    }

    /** A snapshot of the bios in order, for explanations and tests (allocates). */
    public List<Bio> toList() {
        List<Bio> list = new ArrayList<>(size);
        for (Bio b = head; b != null; b = b.next) {
            list.add(b);
        }
        return list;
    }

    @Override
    public String toString() {
        return "bio list of " + size;
    }
}
