#include "lab/threads.hpp"

#include <system_error>

#include "lab/options.hpp"

namespace lab {

ThreadSet::ThreadSet() {
    try {
        reaper_ = std::thread([this] { reap(); });
    } catch (const std::system_error& error) {
        throw StartupError(1, std::string("cannot start the reaper thread: ") + error.what());
    }
}

ThreadSet::~ThreadSet() {
    join_all();
    {
        std::lock_guard lock(mutex_);
        stop_ = true;
    }
    changed_.notify_all();
    reaper_.join();
}

void ThreadSet::join_all() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [this] { return running_.empty() && finished_.empty() && !reaping_; });
}

void ThreadSet::finish(Worker self, bool ok) noexcept {
    if (!ok) log_error("a connection's thread ended with an exception");
    {
        std::lock_guard lock(mutex_);
        finished_.splice(finished_.end(), running_, self);
    }
    changed_.notify_all();
}

void ThreadSet::reap() noexcept {
    std::unique_lock lock(mutex_);
    while (true) {
        changed_.wait(lock, [this] { return stop_ || !finished_.empty(); });
        if (finished_.empty()) return;  // stop_, and nothing is left to reap
        std::list<Thread> done;
        done.splice(done.end(), finished_);
        reaping_ = true;
        lock.unlock();
        // Each thread has done its bookkeeping: the join waits only for its exit. Its task,
        // and with it the connection's limit slot, goes only once the thread is gone.
        while (!done.empty()) {
            done.front().thread.join();
            done.pop_front();
        }
        lock.lock();
        reaping_ = false;
        changed_.notify_all();
    }
}

}  // namespace lab
