// raii_example: the kvd C API from C++17 through RAII wrappers (kvd_client.hpp).
//
//   raii_example ENDPOINT MODEL
//
// Appends 10 tokens zero-copy, reads them back from the shared-memory pages and compares, shows a
// daemon error as an exception, compacts with StreamingLLM; the sequence is released by its
// destructor and every result object by its unique_ptr.
#include "kvd_client.hpp"

#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>

int main(int argc, char **argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " ENDPOINT MODEL\n";
        return 2;
    }
    try {
        kvd::Client client(argv[1]);
        kvd::HelloInfo info = client.hello();
        const kvd_model_layout *m = kvd_hello_find_model(info.get(), argv[2]);
        if (!m) {
            std::cerr << "no model " << argv[2] << "\n";
            return 1;
        }
        const uint32_t T = 10;
        const size_t bytes = size_t(m->layers) * m->kv_heads * T * m->head_dim * kvd_dtype_size(m->dtype);
        std::vector<uint8_t> k(bytes), v(bytes);
        std::mt19937 rng(42);
        for (auto &b : k) b = uint8_t(rng());
        for (auto &b : v) b = uint8_t(rng());
        {
            kvd::Sequence seq(client, m->name, "raii");
            client.append(seq.id(), m->dtype, m->layers, m->kv_heads, T, m->head_dim, k.data(),
                          v.data(), /*zero_copy=*/true);
            kvd::QueryResult q = client.query(seq.id());
            const size_t per_head = bytes / q->num_heads;
            for (size_t h = 0; h < q->num_heads; h++) {
                auto [kh, vh] = kvd::copy_head(*q, h);
                if (kh.size() != per_head || std::memcmp(kh.data(), k.data() + h * per_head, per_head) ||
                    std::memcmp(vh.data(), v.data() + h * per_head, per_head)) {
                    std::cerr << "mismatch in head " << h << "\n";
                    return 1;
                }
            }
            std::cout << "round trip ok: " << q->num_heads << " heads x " << T << " tokens\n";

            try {
                client.create_sequence("no-such-model");
            } catch (const kvd::Error &e) {
                std::cout << "error caught: " << e.what() << "\n";
            }

            kvd::CompactResult r = client.compact(
                seq.id(), "streamingllm", {kvd_param_int("sinks", 2), kvd_param_int("recent", 3)});
            std::cout << "streamingllm kept " << r->heads[0].kept << " of " << r->heads[0].before
                      << " tokens per head, freed " << r->pages_freed << " pages\n";
        }  // sequence released here
        kvd_stats st = client.stats();
        std::cout << "free pages " << st.free_pages << " of " << st.total_pages << "\n";
    } catch (const kvd::Error &e) {
        std::cerr << "kvd error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
