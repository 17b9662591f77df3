//! `umsctl folders`: list, create and delete folders.

use ums_proto::admin::v1 as pb;

use super::show;
use crate::cli::FoldersCommand;
use crate::client::{Admin, ok};
use crate::output;

pub async fn run(json: bool, admin: &mut Admin, command: FoldersCommand) -> anyhow::Result<()> {
    match command {
        FoldersCommand::List => {
            let list = ok(admin.list_folders(pb::ListFoldersRequest {}).await)?;
            show(json, &list, |l| {
                if l.folders.is_empty() {
                    "no folders".to_owned()
                } else {
                    output::folders(&l.folders).to_string()
                }
            })
        }
        FoldersCommand::Create { name, parent } => {
            let folder = ok(admin
                .create_folder(pb::CreateFolderRequest {
                    name,
                    parent_id: parent,
                })
                .await)?;
            show(json, &folder, |f| {
                let parent = f
                    .parent_id
                    .map_or_else(String::new, |p| format!(" in folder {p}"));
                format!("created folder {} \"{}\"{parent}", f.id, f.name)
            })
        }
        FoldersCommand::Rm { id } => {
            let empty = ok(admin.delete_folder(pb::DeleteFolderRequest { id }).await)?;
            show(json, &empty, |_| format!("deleted folder {id}"))
        }
    }
}
