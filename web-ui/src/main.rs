//! Starling's web app: mounts the Leptos UI.

mod pages;
mod runtime;

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(pages::volunteer::VolunteerPage);
}
